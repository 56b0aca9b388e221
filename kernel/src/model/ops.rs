//! The transformer's building-block ops in two forms: fused kernels for inference, and
//! compositions of differentiable primitives for training.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` have no backward pass: gradients
//! silently stop at them. Training therefore uses [`super::grad_ops`], fused ops with
//! hand-written backward passes (checked against finite differences in the tests);
//! inference uses candle's kernels, which are checked against them. Where those CPU ops do
//! not apply (a GPU, or [`super::portable::set_portable_ops`]), training composes candle's
//! differentiable primitives instead.

use candle_core::{DType, Result, Tensor, D};

use super::portable::cpu_kernels;

/// Which implementation of the ops to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpMode {
    /// Fused kernels without a backward pass (fast; generation and scoring).
    Inference,
    /// As `Inference`, for passes over many tokens of a sequence (prompts, scoring):
    /// projections read their f32 weights even when they also hold quantized ones, which
    /// pay only when decoding one token at a time.
    Prompt,
    /// Compositions of differentiable primitives (training).
    Differentiable,
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: OpMode) -> Result<Tensor> {
    match mode {
        OpMode::Inference | OpMode::Prompt => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32),
        OpMode::Differentiable if cpu_kernels(x) => super::grad_ops::rms_norm(x, weight, eps),
        OpMode::Differentiable => {
            let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_div(&(mean_square + eps)?.sqrt()?)?.broadcast_mul(weight)
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor, mode: OpMode) -> Result<Tensor> {
    match mode {
        OpMode::Inference | OpMode::Prompt => candle_nn::ops::softmax_last_dim(x),
        OpMode::Differentiable if cpu_kernels(x) => super::grad_ops::softmax(x),
        OpMode::Differentiable => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Rotary position embedding in HF's rotate-half layout.
///
/// `x` is `[batch, heads, seq, head_dim]`; `cos`/`sin` are `[seq, head_dim/2]` or
/// `[batch, seq, head_dim/2]` (per-row positions, used with left padding).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: OpMode) -> Result<Tensor> {
    match mode {
        OpMode::Inference | OpMode::Prompt => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        // The fused op with a backward pass covers the shared-position case (training).
        OpMode::Differentiable if cos.rank() == 2 && cpu_kernels(x) => super::grad_ops::rope(x, cos, sin),
        OpMode::Differentiable => {
            let half = x.dim(D::Minus1)? / 2;
            // Broadcast the tables over heads: [seq, d] -> [1, 1, seq, d], [b, seq, d] -> [b, 1, seq, d].
            let (cos, sin) = match cos.rank() {
                2 => (cos.unsqueeze(0)?.unsqueeze(0)?, sin.unsqueeze(0)?.unsqueeze(0)?),
                _ => (cos.unsqueeze(1)?, sin.unsqueeze(1)?),
            };
            let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
            let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        }
    }
}

/// Per-row cross-entropy `[n]` of logits `[n, vocab]` against `targets`, differentiable:
/// the fused op with a hand-written backward pass on the CPU, log-softmax and a gather
/// elsewhere.
pub fn cross_entropy_rows(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    if cpu_kernels(logits) {
        return super::grad_ops::cross_entropy_rows(logits, targets);
    }
    let n = targets.len();
    let targets = Tensor::from_slice(targets, (n, 1), logits.device())?;
    candle_nn::ops::log_softmax(logits, D::Minus1)?.gather(&targets, 1)?.squeeze(1)?.neg()
}

/// Precomputed rotary tables: `cos`/`sin` of shape `[max_positions, head_dim/2]`.
#[derive(Debug, Clone)]
pub struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryTables {
    /// Tables for positions `0..max_positions` with base frequency `theta`, in `dtype`.
    pub fn new(head_dim: usize, max_positions: usize, theta: f64, dtype: DType, device: &candle_core::Device) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..head_dim / 2).map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) as f32).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        let positions = Tensor::arange(0u32, max_positions as u32, device)?.to_dtype(DType::F32)?.reshape((max_positions, 1))?;
        let freqs = positions.broadcast_mul(&inv_freq)?;
        Ok(Self { cos: freqs.cos()?.to_dtype(dtype)?, sin: freqs.sin()?.to_dtype(dtype)? })
    }

    /// The same tables on `device`.
    pub fn to_device(&self, device: &candle_core::Device) -> Result<Self> {
        Ok(Self { cos: self.cos.to_device(device)?, sin: self.sin.to_device(device)? })
    }

    /// The same tables under fresh tensor ids (see `Transformer::with_fresh_ids`).
    pub fn with_fresh_ids(&self) -> Result<Self> {
        Ok(Self { cos: self.cos.broadcast_as(self.cos.shape())?, sin: self.sin.broadcast_as(self.sin.shape())? })
    }

    /// Number of positions the tables cover.
    pub fn len(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// Whether the tables are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(cos, sin)` for the contiguous positions `start..start + len`, shape `[len, head_dim/2]`.
    pub fn range(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.narrow(0, start, len)?, self.sin.narrow(0, start, len)?))
    }

    /// `(cos, sin)` for per-row positions `[batch, seq]` (u32), shape `[batch, seq, head_dim/2]`.
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.cos.dim(1)?;
        Ok((self.cos.index_select(&flat, 0)?.reshape((b, t, half))?, self.sin.index_select(&flat, 0)?.reshape((b, t, half))?))
    }
}
