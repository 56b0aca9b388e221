//! Sentence embeddings with all-MiniLM-L6-v2 run in candle: BERT, mean pooling over the
//! attention mask, L2 normalization (the model's sentence-transformers pipeline), and the
//! cosine similarity of output and reference.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The model directory `scripts/fetch-models` writes.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// Longest input in tokens (the model's `max_seq_length`); longer texts are truncated.
const MAX_SEQ_LEN: usize = 256;

/// Texts embedded per forward pass.
const BATCH: usize = 16;

/// A loaded sentence-embedding model.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

impl Embedder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`, found the
    /// way model files are (`tunelab::model::resolve_model_path`).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let dir = tunelab::model::resolve_model_path(dir)?;
        let read = |name: &str| dir.join(name);
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(read("config.json")).with_context(|| format!("reading {}", read("config.json").display()))?,
        )
        .with_context(|| format!("parsing {}", read("config.json").display()))?;
        let weights = read("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
            .with_context(|| format!("reading {}", weights.display()))?;
        let model = BertModel::load(vb, &config).with_context(|| format!("{} does not hold a BERT model matching its config.json", weights.display()))?;
        let mut tokenizer = Tokenizer::from_file(read("tokenizer.json")).map_err(|e| anyhow::anyhow!("reading {}: {e}", read("tokenizer.json").display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_SEQ_LEN, ..Default::default() }))
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        Ok(Self { model, tokenizer, dir })
    }

    /// Unit-length embeddings of `texts`, one row each.
    pub fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> candle_core::Result<Tensor> {
            let data: Vec<Tensor> = enc.iter().map(|e| Tensor::new(f(e).as_slice(), &Device::Cpu)).collect::<candle_core::Result<_>>()?;
            Tensor::stack(&data, 0)
        };
        let ids = rows(&|e| e.get_ids().to_vec())?;
        let types = rows(&|e| e.get_type_ids().to_vec())?;
        let mask = rows(&|e| e.get_attention_mask().to_vec())?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}
