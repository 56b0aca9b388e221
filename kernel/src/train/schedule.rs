//! The run's plan (steps per epoch, total and warmup steps) and its learning-rate schedule:
//! linear warmup from 0, then cosine decay to 0 (HF's `get_cosine_schedule_with_warmup`).

use super::config::TrainConfig;

/// How many optimiser steps a run takes and how many of them warm up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Optimiser steps per pass over the data.
    pub steps_per_epoch: usize,
    /// Steps planned (epochs × steps per epoch, capped by `max_steps`).
    pub total_steps: usize,
    /// Warmup steps (`warmup_ratio` of the total, rounded up).
    pub warmup: usize,
}

impl Plan {
    /// The plan for training on `examples` examples with `cfg`.
    pub fn new(cfg: &TrainConfig, examples: usize) -> Self {
        let batches_per_epoch = examples.div_ceil(cfg.batch_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.grad_accum);
        let mut total_steps = steps_per_epoch * cfg.epochs.max(1);
        if cfg.max_steps > 0 {
            total_steps = if cfg.epochs == 0 { cfg.max_steps } else { total_steps.min(cfg.max_steps) };
        }
        let warmup = (total_steps as f64 * cfg.warmup_ratio).ceil() as usize;
        Self { steps_per_epoch, total_steps, warmup }
    }

    /// The learning rate of step `step` (0-based), peaking at `peak`.
    pub fn lr_at(&self, step: usize, peak: f64) -> f64 {
        lr_at(step, self.total_steps, self.warmup, peak)
    }
}

/// Learning rate for optimiser step `step` (0-based) of `total`, peaking at `peak` after
/// `warmup` steps.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of transformers' get_cosine_schedule_with_warmup(num_warmup_steps=2,
    /// num_training_steps=10) times lr 1.0 at steps 0..10.
    #[test]
    fn matches_hf_cosine_with_warmup() {
        let hf = [0.0, 0.5, 1.0, 0.9619397662556434, 0.8535533905932737, 0.6913417161825449, 0.5, 0.3086582838174551, 0.14644660940672627, 0.03806023374435663];
        for (step, want) in hf.iter().enumerate() {
            assert!((lr_at(step, 10, 2, 1.0) - want).abs() < 1e-12, "step {step}");
        }
    }
}
