//! Every training setting, with the method's defaults; saved as `train_config.json`.

use serde::{Deserialize, Serialize};

use crate::data::EncodeOptions;
use crate::lora::LoraConfig;

/// Training settings. Defaults follow the method: rank 8, alpha 16, dropout 0, all linear
/// projections, lr 5e-5, 3 epochs, warmup 10 % then cosine, clip 1.0, cutoff 1024.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// The adapter's shape.
    pub lora: LoraConfig,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Fraction of steps spent warming the learning rate up linearly from 0.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// AdamW β₁.
    pub adam_beta1: f64,
    /// AdamW β₂.
    pub adam_beta2: f64,
    /// AdamW ε.
    pub adam_epsilon: f64,
    /// Longest example in tokens.
    pub cutoff_len: usize,
    /// Learn prompt tokens too.
    pub train_on_prompt: bool,
    /// Seed of adapter initialisation and data order.
    pub seed: u64,
    /// Held-out loss every N steps (and at the end) when eval data is given; 0 = only at the end.
    pub eval_steps: usize,
    /// Checkpoint every N steps; 0 = only when interrupted.
    pub save_steps: usize,
    /// Stop after this many steps (0 = run all epochs).
    pub max_steps: usize,
    /// Drop records with errors instead of refusing the dataset.
    pub skip_invalid: bool,
    /// Low-memory mode: keep only each layer's input in the forward pass and recompute the
    /// layer in the backward pass (same gradients, about a third more compute).
    pub low_memory: bool,
    /// Refuse to start when the memory estimate exceeds this many MiB (default: what the
    /// machine has available).
    pub memory_budget_mib: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lora: LoraConfig::default(),
            learning_rate: 5e-5,
            epochs: 3,
            batch_size: 4,
            grad_accum: 1,
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            cutoff_len: 1024,
            train_on_prompt: false,
            seed: 42,
            eval_steps: 0,
            save_steps: 0,
            max_steps: 0,
            skip_invalid: false,
            low_memory: false,
            memory_budget_mib: None,
        }
    }
}

impl TrainConfig {
    /// Tokenization settings implied by this config.
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions { cutoff_len: self.cutoff_len, train_on_prompt: self.train_on_prompt }
    }

    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err("batch size and gradient accumulation must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!("learning rate must be positive, got {}", self.learning_rate));
        }
        if self.epochs == 0 && self.max_steps == 0 {
            return Err("epochs must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(format!("warmup ratio must be in [0, 1), got {}", self.warmup_ratio));
        }
        for (name, value) in [("weight decay", self.weight_decay), ("max grad norm", self.max_grad_norm)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} must be a finite number ≥ 0, got {value}"));
            }
        }
        if !((0.0..1.0).contains(&self.adam_beta1) && (0.0..1.0).contains(&self.adam_beta2)) {
            return Err(format!("Adam betas must be in [0, 1), got {} and {}", self.adam_beta1, self.adam_beta2));
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return Err(format!("Adam epsilon must be positive, got {}", self.adam_epsilon));
        }
        if self.cutoff_len < 8 {
            return Err(format!("cutoff {} is too short", self.cutoff_len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings that would turn the weights into NaN, or silently switch clipping off, are
    /// refused before training starts.
    #[test]
    fn non_finite_or_negative_settings_are_refused() {
        assert!(TrainConfig::default().validate().is_ok());
        let bad = [
            TrainConfig { weight_decay: f64::NAN, ..Default::default() },
            TrainConfig { weight_decay: -1e30, ..Default::default() },
            TrainConfig { max_grad_norm: f64::NAN, ..Default::default() },
            TrainConfig { max_grad_norm: -5.0, ..Default::default() },
            TrainConfig { adam_beta2: 1.0, ..Default::default() },
            TrainConfig { adam_epsilon: 0.0, ..Default::default() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(TrainConfig { max_grad_norm: 0.0, ..Default::default() }.validate().is_ok(), "0 turns clipping off on purpose");
    }
}
