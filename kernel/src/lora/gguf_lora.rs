//! An adapter as llama.cpp's GGUF LoRA file, so llama.cpp (`llama-server --lora`, or
//! llama-cpp-python's `lora_path`) serves a tunelab or PEFT adapter on the base GGUF.
//!
//! The layout is the one llama.cpp's `convert_lora_to_gguf.py` writes: metadata
//! `general.architecture` (the base's), `general.type = "adapter"`, `adapter.type = "lora"`,
//! `adapter.lora.alpha`; tensors `blk.N.<gguf projection>.weight.lora_a` (`[r, in]`) and
//! `.lora_b` (`[out, r]`) in f32. llama.cpp scales an update by `alpha / r`, so alpha is
//! written as `scale · r`, which carries rsLoRA's `alpha / √r` too. For llama models the
//! q and k rows of `B` are permuted as llama.cpp's converter permutes the base's q/k weights
//! (tunelab keeps them in HF order).

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Tensor;

use super::AdapterSet;
use crate::error::{Error, Result};
use crate::model::{Architecture, ModelConfig, PROJECTIONS};

/// llama.cpp's `permute(w, n_head)`: each head's rows from rotate-half order `[h, 2, d/2]`
/// to interleaved order `[h, d/2, 2]` (the inverse of the GGUF reader's un-permute).
fn permute_rope_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((n_head, 2, out / n_head / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// The tensors and metadata of `set` as a GGUF LoRA for a base with configuration `cfg`.
fn gguf_tensors(set: &AdapterSet, cfg: &ModelConfig) -> Result<(Vec<(String, QTensor)>, f32)> {
    let mut tensors = Vec::new();
    let mut scale: Option<f64> = None;
    for layer in 0..cfg.num_hidden_layers {
        for p in PROJECTIONS.iter() {
            let Some(l) = set.layers().get(&p.module(layer)) else { continue };
            if scale.is_some_and(|s| (s - l.scale).abs() > 1e-12 * s.abs().max(1.0)) {
                return Err(Error::InvalidArgument(format!("{}: a GGUF LoRA has one alpha, but this adapter's scales differ between layers", p.module(layer))));
            }
            scale = Some(l.scale);
            let b = l.b.as_tensor().to_dtype(candle_core::DType::F32)?;
            let b = match (cfg.architecture, p.name) {
                (Architecture::Llama, "q_proj") => permute_rope_rows(&b, cfg.num_attention_heads)?,
                (Architecture::Llama, "k_proj") => permute_rope_rows(&b, cfg.num_key_value_heads)?,
                _ => b,
            };
            let a = l.a.as_tensor().to_dtype(candle_core::DType::F32)?;
            let name = format!("blk.{layer}.{}.weight", p.gguf);
            tensors.push((format!("{name}.lora_a"), QTensor::quantize(&a, GgmlDType::F32)?));
            tensors.push((format!("{name}.lora_b"), QTensor::quantize(&b, GgmlDType::F32)?));
        }
    }
    let scale = scale.ok_or_else(|| Error::InvalidArgument("the adapter has no layers for this model".into()))?;
    Ok((tensors, (scale * set.config.r as f64) as f32))
}

impl AdapterSet {
    /// Writes the adapter as a llama.cpp GGUF LoRA file for a base with configuration `cfg`
    /// (see the module documentation), atomically.
    pub fn write_gguf_lora(&self, cfg: &ModelConfig, path: &Path) -> Result<()> {
        let (tensors, alpha) = gguf_tensors(self, cfg)?;
        let metadata = [
            ("general.architecture", gguf_file::Value::String(cfg.architecture.model_type().to_string())),
            ("general.type", gguf_file::Value::String("adapter".into())),
            ("adapter.type", gguf_file::Value::String("lora".into())),
            ("adapter.lora.alpha", gguf_file::Value::F32(alpha)),
        ];
        let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let mut bytes = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut bytes, &metadata, &tensors)?;
        crate::fsutil::write_atomic(path, bytes.get_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuting_inverts_the_reader_s_unpermute() -> candle_core::Result<()> {
        let w = Tensor::arange(0f32, 48.0, &candle_core::Device::Cpu)?.reshape((12, 4))?;
        let back = crate::model::gguf::unpermute_rope_rows(&permute_rope_rows(&w, 3)?, 3)?;
        assert_eq!(back.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        Ok(())
    }
}
