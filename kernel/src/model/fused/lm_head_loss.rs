//! The frozen output head and the cross-entropy as one op that never holds all logits.
//!
//! Rows are processed a chunk at a time: logits `[chunk, vocab]` → per-row loss
//! `logsumexp − logit[target]` and, in the same pass, the row's input gradient for a unit
//! upstream gradient, `(softmax − onehot)·W` `[chunk, hidden]`. The backward pass only
//! scales those rows by the upstream gradient. Peak memory is one chunk of logits (tens of
//! MB) instead of two or three `[rows, vocab]` tensors (hundreds of MB at batch 4 × 256).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{gemm, slice_of, tensor, with_slice, Float, Threads, Trans};

/// Rows whose logits are materialised at once.
const CHUNK: usize = 128;

/// Per-row cross-entropy of `hidden` `[n, h]` through the frozen head `w` `[vocab, h]`
/// against `targets` (`n` ids < vocab): `[n]` losses, with gradients for `hidden` only.
pub fn lm_head_cross_entropy(hidden: &Tensor, w: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (vocab, wh) = w.dims2()?;
    if wh != h || targets.len() != n || targets.iter().any(|&t| t as usize >= vocab) {
        candle_core::bail!("lm_head_cross_entropy: hidden {:?}, head {:?}, {} targets (all < {vocab}?) do not fit", hidden.dims(), w.dims(), targets.len());
    }
    let op = LmHeadLoss { w: w.contiguous()?.detach(), targets: targets.to_vec(), grad: Mutex::new(None) };
    hidden.contiguous()?.apply_op1(op)
}

struct LmHeadLoss {
    w: Tensor,
    targets: Vec<u32>,
    /// `d loss_row / d hidden_row` `[n, h]`, computed by the forward pass.
    grad: Mutex<Option<Tensor>>,
}

/// Losses `[n]` and unit-upstream input gradients `[n, h]`.
fn forward<T: Float>(x: &[T], w: &[T], targets: &[u32], h: usize, vocab: usize) -> (Vec<T>, Vec<T>) {
    let n = targets.len();
    let (mut loss, mut grad) = (vec![T::zero(); n], vec![T::zero(); n * h]);
    let mut logits = vec![T::zero(); CHUNK.min(n) * vocab];
    for c0 in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - c0);
        let logits = &mut logits[..rows * vocab];
        gemm(rows, vocab, h, &x[c0 * h..], Trans::No, w, Trans::Yes, logits, false, T::one(), Threads::All);
        logits.par_chunks_mut(vocab).zip(loss[c0..c0 + rows].par_iter_mut()).zip(targets[c0..c0 + rows].par_iter()).for_each(|((row, l), &t)| {
            let max = row.iter().copied().fold(T::neg_infinity(), num_traits::Float::max);
            let shifted_target = row[t as usize] - max;
            for x in row.iter_mut() {
                *x -= max;
            }
            T::exp_in_place(row);
            let sum = row.iter().fold(T::zero(), |a, &x| a + x);
            *l = sum.ln() - shifted_target;
            let inv = sum.recip();
            for x in row.iter_mut() {
                *x *= inv;
            }
            row[t as usize] -= T::one();
        });
        gemm(rows, h, vocab, logits, Trans::No, w, Trans::No, &mut grad[c0 * h..(c0 + rows) * h], false, T::one(), Threads::All);
    }
    (loss, grad)
}

impl CustomOp1 for LmHeadLoss {
    fn name(&self) -> &'static str {
        "lm-head-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h) = l.shape().dims2()?;
        let (vocab, _) = self.w.dims2()?;
        let (loss, grad) = match s {
            CpuStorage::F32(_) => {
                let (loss, grad) = with_slice::<f32, _>(&self.w, |w| Ok(forward(slice_of(s, l)?, w, &self.targets, h, vocab)))?;
                (CpuStorage::F32(loss), tensor(grad, &[n, h])?)
            }
            CpuStorage::F64(_) => {
                let (loss, grad) = with_slice::<f64, _>(&self.w, |w| Ok(forward(slice_of(s, l)?, w, &self.targets, h, vocab)))?;
                (CpuStorage::F64(loss), tensor(grad, &[n, h])?)
            }
            _ => candle_core::bail!("lm_head_cross_entropy supports f32 and f64"),
        };
        *self.grad.lock().unwrap_or_else(|e| e.into_inner()) = Some(grad);
        Ok((loss, Shape::from(n)))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = self.grad.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(grad) = grad else { candle_core::bail!("lm_head_cross_entropy: backward before forward") };
        Ok(Some(grad.broadcast_mul(&dy.unsqueeze(1)?)?))
    }
}
