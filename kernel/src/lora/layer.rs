//! A LoRA adapter on one linear projection, as PEFT defines it:
//!
//! `y = base(x) + scale · B(A(dropout(x)))`, with `A` `[r, in]` initialised
//! kaiming-uniform (a = √5, i.e. U(±1/√in)), `B` `[out, r]` initialised to zero, and
//! `scale = alpha / r` (or `alpha / √r` with rsLoRA). Only `A` and `B` are trainable.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

/// The trainable low-rank update of one projection.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// Down projection `[r, in]`.
    pub a: Var,
    /// Up projection `[out, r]`.
    pub b: Var,
    /// Multiplier of the update (`alpha / r`, or `alpha / √r` with rsLoRA).
    pub scale: f64,
    /// Dropout probability on the LoRA path's input during training.
    pub dropout: f32,
}

impl LoraLayer {
    /// A fresh layer: `A` uniform in ±1/√in from `rng`, `B` zero — so the adapted model
    /// starts out equal to the base.
    pub fn new(in_dim: usize, out_dim: usize, rank: usize, scale: f64, dropout: f32, dtype: DType, rng: &mut impl Rng) -> candle_core::Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f64> = (0..rank * in_dim).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_vec(a, (rank, in_dim), &Device::Cpu)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, rank), dtype, &Device::Cpu)?;
        Ok(Self { a: Var::from_tensor(&a)?, b: Var::from_tensor(&b)?, scale, dropout })
    }

    /// A layer from existing `A` `[r, in]` and `B` `[out, r]` tensors.
    pub fn from_tensors(a: &Tensor, b: &Tensor, scale: f64, dropout: f32) -> candle_core::Result<Self> {
        Ok(Self { a: Var::from_tensor(a)?, b: Var::from_tensor(b)?, scale, dropout })
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    /// The update `scale · B(A(dropout(x)))` for `x` `[..., in]`.
    pub fn forward(&self, x: &Tensor, training: bool) -> candle_core::Result<Tensor> {
        let x = if training && self.dropout > 0.0 { candle_nn::ops::dropout(x, self.dropout)? } else { x.clone() };
        let h = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        h.broadcast_matmul(&self.b.as_tensor().t()?)? * self.scale
    }

    /// The dense update `scale · B·A` `[out, in]`, for merging into the base weight.
    pub fn delta_weight(&self) -> candle_core::Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale
    }
}

/// A seeded RNG for adapter initialisation.
pub(crate) fn init_rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}
