//! LoRA training: settings, the AdamW optimiser, the warmup + cosine schedule, the masked
//! loss, checkpoints, the training log, and the loop that ties them together.

mod checkpoint;
mod config;
mod log;
mod loss;
mod memory;
mod optim;
mod schedule;
mod trainer;

pub use checkpoint::{latest_checkpoint, Checkpoint, TrainerState};
pub use config::TrainConfig;
pub use log::{format_duration, LogRecord, TrainerLog};
pub use loss::{causal_lm_loss, causal_lm_loss_and_grads, masked_cross_entropy};
pub use memory::{available_memory_bytes, peak_rss_bytes, rss_bytes, MemoryEstimate};
pub use optim::AdamW;
pub use schedule::lr_at;
pub use trainer::{eval_loss, loss_chart, TrainEvent, TrainOutcome, TrainStatus, Trainer};
