//! One optimiser step: loss and gradients over the micro-batches (summed, each weighted by
//! `1 / micro-batches`), the NaN check, global-norm clipping, and the AdamW update. The
//! trainer and `tunelab bench train` both call [`step`], so the benchmark times the
//! trainer's own work.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::loss::causal_lm_loss_and_grads;
use super::optim::AdamW;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::Transformer;

/// How one optimiser step runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// Learning rate of this step.
    pub lr: f64,
    /// Clip the global gradient norm to this (0 turns clipping off).
    pub max_grad_norm: f64,
    /// Recompute activations layer by layer in the backward pass (the low-memory path).
    pub low_memory: bool,
}

/// What one optimiser step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Mean training loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Non-padding tokens processed.
    pub tokens: usize,
}

/// One optimiser step of `opt` over the micro-batches `micro` on `model` (the adapted model
/// whose LoRA variables are `opt`'s). A non-finite loss or gradient norm is refused with
/// [`Error::TrainingDiverged`] before the update, leaving the variables and the optimiser as
/// they were; its `step` is the optimiser's next step and its `checkpoint` is `None`.
pub fn step(model: &Transformer, opt: &mut AdamW, micro: &[Batch], opts: StepOptions) -> Result<StepOutcome> {
    let vars = opt.vars();
    let diverged = |message: String| Error::TrainingDiverged { step: opt.t + 1, message, checkpoint: None };
    let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
    let (mut loss_sum, mut tokens) = (0.0, 0);
    for batch in micro {
        let (loss, _, g) = causal_lm_loss_and_grads(model, &batch.input_ids, &batch.labels, opts.low_memory)?;
        loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? / micro.len() as f64;
        tokens += batch.tokens;
        accumulate(&mut grads, vars, &g, 1.0 / micro.len() as f64)?;
    }
    if !loss_sum.is_finite() {
        return Err(diverged(format!("loss is {loss_sum}")));
    }
    let grads: Vec<Tensor> = grads.into_iter().zip(vars).map(|(g, v)| g.map_or_else(|| v.zeros_like(), Ok)).collect::<candle_core::Result<_>>()?;
    let norm = global_norm(&grads)?;
    if !norm.is_finite() {
        return Err(diverged(format!("gradient norm is {norm}")));
    }
    let grads = if opts.max_grad_norm > 0.0 && norm > opts.max_grad_norm {
        let s = opts.max_grad_norm / (norm + 1e-6);
        grads.iter().map(|g| g * s).collect::<candle_core::Result<Vec<_>>>()?
    } else {
        grads
    };
    opt.step(&grads, opts.lr)?;
    Ok(StepOutcome { loss: loss_sum, grad_norm: norm, tokens })
}

/// Adds `weight ×` each variable's gradient in `grads` to its slot in `acc`.
fn accumulate(acc: &mut [Option<Tensor>], vars: &[Var], grads: &GradStore, weight: f64) -> candle_core::Result<()> {
    for (slot, var) in acc.iter_mut().zip(vars) {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = if weight == 1.0 { g.clone() } else { (g * weight)? };
            *slot = Some(match slot.take() {
                Some(prev) => (prev + &g)?,
                None => g,
            });
        }
    }
    Ok(())
}

/// The L2 norm of all gradients together.
fn global_norm(grads: &[Tensor]) -> candle_core::Result<f64> {
    let mut sum = 0.0;
    for g in grads {
        sum += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(sum.sqrt())
}
