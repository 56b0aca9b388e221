//! `trainer_log.jsonl`: one JSON line per logged step with LLaMA-Factory's field names,
//! appended, flushed and fsynced so a crash loses nothing already logged; and its loss chart.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::events::TrainEvent;
use crate::display::{LineChart, Series};
use crate::error::{Error, Result};

/// One line of `trainer_log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Optimiser steps done.
    pub current_steps: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// Training loss of this step (absent on eval-only lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Held-out loss, on lines where it was computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Learning rate used (LLaMA-Factory writes `lr` or `learning_rate`; absent on its
    /// eval-only lines).
    #[serde(default, alias = "learning_rate", deserialize_with = "number_or_zero")]
    pub lr: f64,
    /// Fractional epoch.
    #[serde(default, deserialize_with = "number_or_zero")]
    pub epoch: f64,
    /// Percent of steps done.
    #[serde(default, deserialize_with = "number_or_zero")]
    pub percentage: f64,
    /// Elapsed wall time, `H:MM:SS`.
    #[serde(default)]
    pub elapsed_time: String,
    /// Estimated time left, `H:MM:SS`.
    #[serde(default)]
    pub remaining_time: String,
    /// Global gradient norm before clipping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Tokens per second over this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Peak resident memory of the training process so far, MiB (not a LLaMA-Factory field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<u64>,
}

/// A number, or 0 where the log has `null` (a non-finite value as JSON writes it).
fn number_or_zero<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// `text` with the non-standard numbers Python's `json.dumps` writes for non-finite floats
/// (`NaN`, `Infinity`, `-Infinity`: a diverged loss, an infinite gradient norm) replaced by
/// `null` outside strings, so logs written by transformers or LLaMA-Factory parse.
fn standard_json(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return std::borrow::Cow::Borrowed(text);
    }
    let (bytes, mut out) = (text.as_bytes(), Vec::with_capacity(text.len()));
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            (escaped, in_string) = (!escaped && b == b'\\', in_string && (escaped || b != b'"'));
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| bytes[i..].starts_with(t.as_bytes())) {
            out.extend_from_slice(b"null");
            i += token.len();
            continue;
        }
        out.push(b);
        i += 1;
    }
    // Only whole ASCII tokens were replaced, so the bytes are still UTF-8.
    std::borrow::Cow::Owned(String::from_utf8(out).expect("UTF-8 in, UTF-8 out"))
}

impl LogRecord {
    /// The log line of a [`TrainEvent::Step`] (`None` for other events), with its numbers as
    /// LLaMA-Factory writes them (losses, epoch and norm to 4 decimals, throughput to 1,
    /// times as `H:MM:SS`) and `peak_rss_mb`; a held-out loss is added where one is measured.
    pub fn from_step(event: &TrainEvent, peak_rss_mb: Option<u64>) -> Option<Self> {
        let TrainEvent::Step { step, total_steps, epoch, loss, lr, grad_norm, tokens_per_second, elapsed, eta } = *event else {
            return None;
        };
        Some(Self {
            current_steps: step,
            total_steps,
            loss: Some(round4(loss)),
            eval_loss: None,
            lr,
            epoch: round4(epoch),
            percentage: round4(100.0 * step as f64 / total_steps as f64),
            elapsed_time: format_duration(elapsed),
            remaining_time: format_duration(eta),
            grad_norm: Some(round4(grad_norm)),
            throughput: Some((tokens_per_second * 10.0).round() / 10.0),
            peak_rss_mb,
        })
    }
}

/// Appends records to a training log.
#[derive(Debug)]
pub struct TrainerLog {
    path: PathBuf,
    file: std::fs::File,
}

impl TrainerLog {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Appends one record durably.
    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("log records serialise");
        line.push('\n');
        self.file.write_all(line.as_bytes()).and_then(|_| self.file.sync_data()).map_err(|e| Error::io(&self.path, e))
    }

    /// Reads every record of a log (for resuming and charts). A last line without its
    /// newline is an append cut short by a kill: it is dropped (the step it described is
    /// redone from the checkpoint). Any other unreadable line is an error naming it.
    pub fn read(path: &Path) -> Result<Vec<LogRecord>> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = crate::fsutil::read_input_text(path)?;
        let complete = match text.rfind('\n') {
            Some(end) if end + 1 < text.len() => &text[..=end],
            Some(_) => &text[..],
            None => "",
        };
        complete
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(&standard_json(l)).map_err(|e| Error::InvalidArgument(format!("{}:{}: {e}", path.display(), i + 1))))
            .collect()
    }

    /// Keeps only records up to `step` (a resumed run rewrites what came after its checkpoint).
    pub fn truncate_after(path: &Path, step: usize) -> Result<()> {
        let kept: Vec<LogRecord> = Self::read(path)?.into_iter().filter(|r| r.current_steps <= step).collect();
        let mut text = String::new();
        for r in kept {
            text.push_str(&serde_json::to_string(&r).expect("log records serialise"));
            text.push('\n');
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// Reads the loss history of a Hugging Face `trainer_state.json` (what LLaMA-Factory and
/// other `transformers.Trainer` runs write beside their checkpoints) as log records: each
/// `log_history` entry with a `loss` or an `eval_loss` (`learning_rate` or `lr`, `epoch`,
/// `grad_norm` where present); summary entries (`train_loss`, runtimes) are skipped. An entry
/// without a usable `step` is an error naming its index.
pub fn read_trainer_state(path: &Path) -> Result<Vec<LogRecord>> {
    let text = crate::fsutil::read_input_text(path)?;
    let state: serde_json::Value =
        serde_json::from_str(&standard_json(&text)).map_err(|e| Error::InvalidArgument(format!("{}: not a trainer_state.json: {e}", path.display())))?;
    let history = state
        .get("log_history")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| Error::InvalidArgument(format!("{}: no log_history list", path.display())))?;
    let total_steps = state.get("max_steps").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize;
    let number = |e: &serde_json::Value, keys: &[&str]| keys.iter().find_map(|k| e.get(*k).and_then(serde_json::Value::as_f64));
    let mut records = Vec::new();
    for (i, entry) in history.iter().enumerate() {
        let (loss, eval_loss) = (number(entry, &["loss"]), number(entry, &["eval_loss"]));
        if loss.is_none() && eval_loss.is_none() {
            continue;
        }
        let step = entry
            .get("step")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| Error::InvalidArgument(format!("{}: log_history[{i}] has no step", path.display())))?;
        records.push(LogRecord {
            current_steps: step as usize,
            total_steps,
            loss,
            eval_loss,
            lr: number(entry, &["learning_rate", "lr"]).unwrap_or(0.0),
            epoch: number(entry, &["epoch"]).unwrap_or(0.0),
            percentage: if total_steps > 0 { round4(100.0 * step as f64 / total_steps as f64) } else { 0.0 },
            elapsed_time: String::new(),
            remaining_time: String::new(),
            grad_norm: number(entry, &["grad_norm"]),
            throughput: None,
            peak_rss_mb: None,
        });
    }
    Ok(records)
}

/// `H:MM:SS`, as LLaMA-Factory writes durations.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Rounds to 4 decimals, as LLaMA-Factory logs losses.
pub(crate) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The loss chart of a training log: training loss per step, held-out loss where measured.
pub fn loss_chart(history: &[LogRecord]) -> LineChart {
    let train: Vec<(f64, f64)> = history.iter().filter_map(|r| r.loss.map(|l| (r.current_steps as f64, l))).collect();
    let eval: Vec<(f64, f64)> = history.iter().filter_map(|r| r.eval_loss.map(|l| (r.current_steps as f64, l))).collect();
    let mut series = vec![Series { name: "train loss".into(), color: "#1f77b4".into(), points: train }];
    if !eval.is_empty() {
        series.push(Series { name: "eval loss".into(), color: "#d62728".into(), points: eval });
    }
    LineChart { title: "training loss".into(), x_label: "step".into(), y_label: "loss".into(), series }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python writes non-finite floats as bare `NaN` / `Infinity`: they read as missing
    /// values, and the same words inside strings are left alone.
    #[test]
    fn python_non_finite_numbers_read_as_missing() {
        let line = r#"{"current_steps": 3, "total_steps": 9, "loss": NaN, "grad_norm": Infinity, "lr": -Infinity, "elapsed_time": "NaN \" Infinity"}"#;
        let r: LogRecord = serde_json::from_str(&standard_json(line)).unwrap();
        assert_eq!((r.loss, r.grad_norm, r.lr, r.elapsed_time.as_str()), (None, None, 0.0, "NaN \" Infinity"));
        assert!(matches!(standard_json("{\"loss\": 1.5}"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn trainer_state_history_reads_as_log_records() {
        let dir = std::env::temp_dir().join(format!("tunelab-trainer-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trainer_state.json");
        // The shape transformers.Trainer writes (LLaMA-Factory's runs included).
        std::fs::write(
            &path,
            r#"{"best_metric": null, "epoch": 3.0, "global_step": 30, "max_steps": 30, "log_history": [
                {"epoch": 0.5, "grad_norm": 1.25, "learning_rate": 4.9e-05, "loss": 2.5, "step": 5},
                {"epoch": 1.0, "grad_norm": 0.9, "learning_rate": 4.5e-05, "loss": 2.1, "step": 10},
                {"epoch": 1.0, "eval_loss": 2.3, "eval_runtime": 1.2, "step": 10},
                {"epoch": 3.0, "step": 30, "total_flos": 1.0, "train_loss": 1.9, "train_runtime": 60.0}
            ]}"#,
        )
        .unwrap();
        let records = read_trainer_state(&path).unwrap();
        assert_eq!(records.len(), 3, "the summary entry is skipped");
        assert_eq!((records[0].current_steps, records[0].total_steps, records[0].loss, records[0].lr), (5, 30, Some(2.5), 4.9e-05));
        assert_eq!((records[2].loss, records[2].eval_loss), (None, Some(2.3)));
        std::fs::write(&path, r#"{"log_history": [{"loss": 1.0}]}"#).unwrap();
        assert!(read_trainer_state(&path).unwrap_err().to_string().contains("log_history[0] has no step"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
