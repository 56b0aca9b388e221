//! `trainer_log.jsonl`: one JSON line per logged step with LLaMA-Factory's field names,
//! appended, flushed and fsynced so a crash loses nothing already logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    /// Learning rate used.
    pub lr: f64,
    /// Fractional epoch.
    pub epoch: f64,
    /// Percent of steps done.
    pub percentage: f64,
    /// Elapsed wall time, `H:MM:SS`.
    pub elapsed_time: String,
    /// Estimated time left, `H:MM:SS`.
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

    /// Reads every record of a log (for resuming and charts).
    pub fn read(path: &Path) -> Result<Vec<LogRecord>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(path, e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::InvalidArgument(format!("{}:{}: {e}", path.display(), i + 1))))
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

/// `H:MM:SS`, as LLaMA-Factory writes durations.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
