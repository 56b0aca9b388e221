//! What training reports: the events streamed to the caller's callback while it runs, and
//! the outcome it returns.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::log::LogRecord;
use crate::lora::AdapterSet;

/// Something that happened during training, streamed to the caller's callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// Training is about to start (or resume).
    Started {
        /// Steps planned.
        total_steps: usize,
        /// Step training starts from (0 unless resumed).
        start_step: usize,
        /// Examples used.
        examples: usize,
        /// Invalid records dropped (with `skip_invalid`).
        skipped: usize,
        /// Examples longer than the cutoff, shortened to fit (the reply is kept whole when
        /// it fits; a longer one loses its end, end-of-turn token included).
        shortened: usize,
        /// Trainable parameters.
        trainable_params: usize,
    },
    /// One optimiser step finished.
    Step {
        /// Steps done.
        step: usize,
        /// Steps planned.
        total_steps: usize,
        /// Fractional epoch.
        epoch: f64,
        /// Training loss.
        loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Tokens per second in this step.
        tokens_per_second: f64,
        /// Seconds since (re)start.
        elapsed: f64,
        /// Estimated seconds left.
        eta: f64,
    },
    /// The memory plan, before the first step.
    Memory {
        /// Estimated MiB training needs beyond the loaded model.
        estimate_mib: u64,
        /// MiB the machine had available (None where unknown).
        available_mib: Option<u64>,
        /// Whether activations are recomputed layer by layer.
        low_memory: bool,
    },
    /// An epoch ended (or training ended inside one).
    EpochEnd {
        /// The epoch (1-based).
        epoch: usize,
        /// Peak resident memory of this process so far, MiB.
        peak_rss_mib: Option<u64>,
        /// Resident memory now, MiB.
        rss_mib: Option<u64>,
    },
    /// Held-out loss was computed.
    Eval {
        /// After this step.
        step: usize,
        /// Mean held-out loss.
        eval_loss: f64,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// At this step.
        step: usize,
        /// Its directory.
        dir: PathBuf,
    },
}

/// How training ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainStatus {
    /// Every planned step ran.
    Completed,
    /// Cancelled (Ctrl-C, notebook interrupt); a checkpoint holds the state to resume from.
    Interrupted {
        /// The checkpoint written on the way out.
        checkpoint: PathBuf,
    },
}

/// The result of a training run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Completed or interrupted.
    pub status: TrainStatus,
    /// The trained adapter.
    pub adapter: AdapterSet,
    /// Steps done.
    pub steps: usize,
    /// Every log record of the run (including a resumed run's earlier ones).
    pub history: Vec<LogRecord>,
    /// Invalid records dropped.
    pub skipped: usize,
    /// The output directory.
    pub out_dir: PathBuf,
}

impl TrainOutcome {
    /// Training losses by step.
    pub fn losses(&self) -> Vec<(usize, f64)> {
        self.history.iter().filter_map(|r| r.loss.map(|l| (r.current_steps, l))).collect()
    }

    /// Held-out losses by step.
    pub fn eval_losses(&self) -> Vec<(usize, f64)> {
        self.history.iter().filter_map(|r| r.eval_loss.map(|l| (r.current_steps, l))).collect()
    }
}
