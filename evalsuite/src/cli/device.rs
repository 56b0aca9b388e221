//! `--device` (and `--base-dtype`), shared by the commands that run a local model.

use anyhow::Context;
use clap::Args;
use tunelab::{Model, Transformer};

/// Where the model runs.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// Where tensors live: cpu, cuda (GPU 0) or cuda:N (builds with --features cuda;
    /// see scripts/build-cuda). Off the CPU, the device-generic ops run instead of the
    /// CPU kernels.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl DeviceArgs {
    /// The device named by `--device`.
    pub fn device(&self) -> anyhow::Result<candle_core::Device> {
        Ok(tunelab::parse_device(&self.device)?)
    }

    /// Loads `path` and moves it to the device.
    pub fn load_model(&self, path: &std::path::Path) -> anyhow::Result<Model> {
        let device = self.device()?;
        Model::load_on(path, &device).with_context(|| format!("loading {} on {}", path.display(), self.device))
    }
}

/// How the frozen base weights are stored in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BaseDtype {
    /// f32: exact, and the fused CPU kernels' type.
    #[default]
    F32,
    /// bf16 (LoRA update, norms and activations stay f32): half the weight memory, the
    /// device's bf16 GEMM. Meant for GPUs; on a CPU it runs candle's slower bf16 GEMM.
    Bf16,
}

impl BaseDtype {
    /// `t` with its base weights stored as this type.
    pub fn apply(self, t: &Transformer) -> anyhow::Result<Transformer> {
        Ok(match self {
            Self::F32 => t.clone(),
            Self::Bf16 => t.with_bf16_base_weights()?,
        })
    }
}
