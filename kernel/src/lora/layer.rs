//! PEFT's initialisation of a LoRA update: `A` `[r, in]` kaiming-uniform (a = √5, i.e.
//! U(±1/√in)), `B` `[out, r]` zero, so an adapted model starts out equal to its base. The
//! layer type itself, [`LoraLayer`], lives with the projection it attaches to
//! (`crate::model::Linear`).

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::model::LoraLayer;

impl LoraLayer {
    /// A fresh layer on `device`: `A` uniform in ±1/√in from `rng` (drawn on the CPU, so a
    /// seed gives the same adapter on every device), `B` zero — so the adapted model starts
    /// out equal to the base.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        rank: usize,
        scale: f64,
        dropout: f32,
        dtype: DType,
        device: &Device,
        rng: &mut impl Rng,
    ) -> candle_core::Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f64> = (0..rank * in_dim).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_vec(a, (rank, in_dim), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        let b = Tensor::zeros((out_dim, rank), dtype, device)?;
        Ok(Self { a: Var::from_tensor(&a)?, b: Var::from_tensor(&b)?, scale, dropout })
    }
}

/// A seeded RNG for adapter initialisation.
pub(crate) fn init_rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}
