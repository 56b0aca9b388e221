//! Displays that update in place: one marker line on stdout per update, which the tunelab
//! kernel turns into `display_data` / `update_display_data` (see the kernel's `bridge.rs`).
//! Outside the kernel the lines are inert text.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::markers;
use crate::display::escape_html;
use crate::train::{loss_chart, LogRecord, TrainEvent};

/// One output area of a cell that can be redrawn.
#[derive(Debug)]
pub struct LiveDisplay {
    id: String,
    shown: bool,
}

impl LiveDisplay {
    /// A new display with a unique id.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Self { id: format!("tunelab-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)), shown: false }
    }

    /// The display id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Shows (first call) or replaces (later calls) the display's HTML; `text` is the
    /// plain-text fallback.
    pub fn show(&mut self, html: &str, text: &str) {
        write_marker(&serde_json::json!({
            "display_id": self.id,
            "update": self.shown,
            "data": {"text/html": html, "text/plain": text},
        }));
        self.shown = true;
    }
}

/// Clears the running cell's output so far (a Jupyter `clear_output`); with `wait`, the
/// front end clears only when the next output arrives, which avoids flicker.
pub fn clear_output(wait: bool) {
    write_marker(&serde_json::json!({"clear": true, "wait": wait, "display_id": "", "data": {}}));
}

/// One display marker line on stdout, flushed (the kernel reads it as the cell runs).
fn write_marker(line: &serde_json::Value) {
    let (marker, line) = (markers::display_marker(), markers::neutralize_json(&line.to_string()));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{marker}{line}");
    let _ = out.flush();
}

impl Default for LiveDisplay {
    fn default() -> Self {
        Self::new()
    }
}

/// A training callback for notebooks: a progress bar with loss, learning rate, speed and
/// ETA, and the loss chart, redrawn in one output every `every` steps (and at evals).
pub fn live_training(every: usize) -> impl FnMut(&TrainEvent) {
    let mut display = LiveDisplay::new();
    let mut history: Vec<LogRecord> = Vec::new();
    let every = every.max(1);
    move |event| {
        let (step, total, html_status) = match event {
            TrainEvent::Started { total_steps, start_step, examples, skipped, shortened, trainable_params } => {
                let html = format!(
                    "starting: {examples} examples ({skipped} invalid skipped, {shortened} shortened to the cutoff), {trainable_params} trainable parameters, {total_steps} steps from step {start_step}"
                );
                display.show(&format!("<div>{}</div>", escape_html(&html)), &html);
                return;
            }
            TrainEvent::Step { step, total_steps, epoch, loss, lr, tokens_per_second, eta, .. } => {
                history.push(LogRecord {
                    current_steps: *step,
                    total_steps: *total_steps,
                    loss: Some(*loss),
                    eval_loss: None,
                    lr: *lr,
                    epoch: *epoch,
                    percentage: 0.0,
                    elapsed_time: String::new(),
                    remaining_time: String::new(),
                    grad_norm: None,
                    throughput: None,
                    peak_rss_mb: None,
                });
                if step % every != 0 && step != total_steps {
                    return;
                }
                (
                    *step,
                    *total_steps,
                    format!("loss {loss:.4} · lr {lr:.2e} · {tokens_per_second:.0} tok/s · epoch {epoch:.2} · eta {}", crate::train::format_duration(*eta)),
                )
            }
            TrainEvent::Eval { step, eval_loss } => {
                if let Some(r) = history.iter_mut().rev().find(|r| r.current_steps == *step) {
                    r.eval_loss = Some(*eval_loss);
                }
                let total = history.last().map_or(*step, |r| r.total_steps);
                (*step, total, format!("eval loss {eval_loss:.4} at step {step}"))
            }
            TrainEvent::Checkpoint { step, dir } => {
                let total = history.last().map_or(*step, |r| r.total_steps);
                (*step, total, format!("checkpoint saved: {}", dir.display()))
            }
            TrainEvent::EpochEnd { epoch, peak_rss_mib, .. } => {
                let step = history.last().map_or(0, |r| r.current_steps);
                let total = history.last().map_or(step, |r| r.total_steps);
                (step, total, format!("epoch {epoch} done · peak memory {} MiB", peak_rss_mib.map_or("?".into(), |m| m.to_string())))
            }
            // The memory plan is part of the starting line the CLI prints; nothing to redraw.
            TrainEvent::Memory { .. } => return,
        };
        let pct = 100.0 * step as f64 / total.max(1) as f64;
        let svg = loss_chart(&history).to_svg(560.0, 300.0);
        let html = format!(
            "<div><progress value=\"{step}\" max=\"{total}\" style=\"width:320px\"></progress> {step}/{total} ({pct:.0}%) · {}</div>{svg}",
            escape_html(&html_status)
        );
        display.show(&html, &format!("step {step}/{total}: {html_status}"));
    }
}
