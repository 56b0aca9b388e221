//! Sentence embeddings with all-MiniLM-L6-v2 run in candle: BERT, mean pooling over the
//! attention mask, L2 normalization (the model's sentence-transformers pipeline), and the
//! `embedding` scorer: the cosine similarity of output and reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::{params, Item, ScoreContext, Scorer, Value};
use crate::error::{Error, Result};

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
    pub fn load(dir: &Path) -> Result<Self> {
        let hint = "(scripts/fetch-models fetches all-MiniLM-L6-v2)";
        let dir = tunelab::model::resolve_model_path(dir)?;
        let read = |name: &str| dir.join(name);
        let bad = |path: PathBuf, message: String| Error::ScorerModel { path, message };
        let config_path = read("config.json");
        let config_text = tunelab::fsutil::read_input_text(&config_path).map_err(|e| bad(config_path.clone(), format!("cannot read: {e} {hint}")))?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| bad(config_path.clone(), format!("not a BERT config: {e}")))?;
        let weights = read("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
            .map_err(|e| bad(weights.clone(), format!("cannot read: {e} {hint}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| bad(weights.clone(), format!("does not hold a BERT model matching its config.json: {e}")))?;
        let tokenizer_path = read("tokenizer.json");
        let tokenizer_bytes = tunelab::fsutil::read_input(&tokenizer_path).map_err(|e| bad(tokenizer_path.clone(), format!("cannot read: {e} {hint}")))?;
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_bytes).map_err(|e| bad(tokenizer_path.clone(), format!("cannot read: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_SEQ_LEN, ..Default::default() }))
            .map_err(|e| bad(tokenizer_path.clone(), e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        Ok(Self { model, tokenizer, dir })
    }

    /// Unit-length embeddings of `texts`, one row each.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let failed = |message: String| Error::ScorerModel { path: self.dir.clone(), message };
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| failed(format!("tokenizing: {e}")))?;
        self.pool(&enc).map_err(|e| failed(e.to_string()))
    }

    /// Mean-pooled, L2-normalized embeddings of encoded texts.
    fn pool(&self, enc: &[tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
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
        mean.broadcast_div(&norm)?.to_vec2()
    }

    /// Embeds each distinct text once.
    pub fn embed_unique(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut unique: Vec<&str> = Vec::new();
        for t in texts {
            index.entry(t).or_insert_with(|| {
                unique.push(t);
                unique.len() - 1
            });
        }
        let vectors = self.embed(&unique)?;
        Ok(texts.iter().map(|t| vectors[index[t]].clone()).collect())
    }
}

/// `embedding`: cosine similarity of the output's and the reference's embeddings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    /// The embedding model directory (default: all-MiniLM-L6-v2 from tunelab's model path).
    pub model: Option<PathBuf>,
}

impl Embedding {
    fn model_dir(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR))
    }

    /// From a rubric check's parameters.
    pub fn build(table: toml::Table) -> std::result::Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for Embedding {
    fn kind(&self) -> &'static str {
        "embedding"
    }

    fn default_threshold(&self) -> f64 {
        0.5
    }

    fn prepare(&self, ctx: &ScoreContext<'_>) -> Result<()> {
        ctx.embedder(&self.model_dir()).map(|_| ())
    }

    fn score(&self, items: &[Item<'_>], ctx: &ScoreContext<'_>) -> Result<Vec<Value>> {
        let embedder = ctx.embedder(&self.model_dir())?;
        let texts: Vec<&str> = items.iter().flat_map(|it| [it.output, it.case.reference.as_str()]).collect();
        let vectors = embedder.embed_unique(&texts)?;
        Ok(vectors.chunks(2).map(|pair| Value::of(cosine(&pair[0], &pair[1]))).collect())
    }
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}
