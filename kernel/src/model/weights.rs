//! A named set of f32 tensors under HF checkpoint names, with lookups that report the
//! missing tensor or the wrong shape by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::linear::PROJECTIONS;
use super::packed::PackedRows;

use crate::error::{Error, Result};
use crate::splitmix::SplitMix64;

/// Base-model weights keyed by HF name (`model.layers.0.self_attn.q_proj.weight`, …).
#[derive(Debug, Clone)]
pub struct Weights {
    source: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// The file's quantized blocks of some tensors, for decoding steps (see `packed`).
    packed: HashMap<String, Arc<PackedRows>>,
}

impl Weights {
    /// Wraps tensors read from `source` (used only in error messages).
    pub fn new(source: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Self { source: source.into(), tensors, packed: HashMap::new() }
    }

    /// The same weights with quantized blocks for some tensors, each holding exactly the
    /// f32 tensor of the same name (decoding steps read them instead).
    pub(crate) fn with_packed(self, packed: HashMap<String, Arc<PackedRows>>) -> Self {
        Self { packed, ..self }
    }

    /// The quantized blocks of tensor `name`, when the file stored it in a packed format.
    pub(crate) fn packed(&self, name: &str) -> Option<Arc<PackedRows>> {
        self.packed.get(name).cloned()
    }

    /// The file or directory the weights came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether a tensor named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::bad_model(&self.source, format!("missing tensor {name} (expected shape {shape:?})")))?;
        if t.dims() != shape {
            return Err(Error::bad_model(&self.source, format!("tensor {name} has shape {:?}, expected {shape:?}", t.dims())));
        }
        Ok(t.clone())
    }

    /// The tensor `name` if present (with the shape check), `None` if absent.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// All tensors by name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// The tensors by name, without the quantized blocks (to modify them in place).
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.tensors
    }

    /// Random weights with every tensor `cfg` needs (for unit tests and examples): normal
    /// values scaled by `1/sqrt(fan_in)`, norms near 1, deterministic in `seed`.
    pub fn random(cfg: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let mut rng = SplitMix64(seed);
        let h = cfg.hidden_size;
        let mut shapes: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h]), ("model.norm.weight".into(), vec![h])];
        if !cfg.tie_word_embeddings {
            shapes.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
        }
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            shapes.extend([(format!("{p}.input_layernorm.weight"), vec![h]), (format!("{p}.post_attention_layernorm.weight"), vec![h])]);
            // Every weight, then the biases: the order values were always drawn in, so a
            // seed keeps giving the same model.
            for proj in &PROJECTIONS {
                let (inp, out) = proj.dims(cfg);
                shapes.push((format!("{}.weight", proj.module(i)), vec![out, inp]));
            }
            for proj in PROJECTIONS.iter().filter(|p| p.has_bias(cfg)) {
                shapes.push((format!("{}.bias", proj.module(i)), vec![proj.output.of(cfg)]));
            }
        }
        let mut tensors = HashMap::new();
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let is_norm = name.ends_with("layernorm.weight") || name == "model.norm.weight";
            let scale = if shape.len() == 2 { 1.0 / (shape[1] as f64).sqrt() } else { 0.1 };
            let data: Vec<f64> = (0..n).map(|_| if is_norm { 1.0 + 0.1 * rng.normal() } else { scale * rng.normal() }).collect();
            let t = Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?;
            tensors.insert(name, t);
        }
        Ok(Self::new("<random>", tensors))
    }
}
