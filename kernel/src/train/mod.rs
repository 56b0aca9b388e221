//! LoRA training: settings, the AdamW optimiser, the plan and its warmup + cosine schedule,
//! the masked loss, one optimiser [`step`], checkpoints, the training log, cancellation, and
//! the [`Trainer`] that runs them in order.

mod cancel;
mod checkpoint;
mod config;
mod events;
mod log;
mod loss;
mod memory;
mod optim;
mod prepare;
mod schedule;
mod step;
mod trainer;

pub use cancel::{install_interrupt_handler, interrupt_flag};
pub use checkpoint::{latest_checkpoint, Checkpoint, TrainerState};
pub use config::TrainConfig;
pub use events::{TrainEvent, TrainOutcome, TrainStatus};
pub use log::{format_duration, loss_chart, read_trainer_state, LogRecord, TrainerLog};
pub use loss::{causal_lm_loss, causal_lm_loss_and_grads, eval_loss, masked_cross_entropy};
pub use memory::{available_memory_bytes, peak_rss_bytes, rss_bytes, MemoryEstimate};
pub use optim::AdamW;
pub use schedule::lr_at;
pub use step::{step, StepOptions, StepOutcome};
pub use trainer::Trainer;
