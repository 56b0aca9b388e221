//! The local backend: a base model loaded once, with zero or more LoRA adapters that can be
//! swapped without reloading it (each folded into a copy of the projection weights, so an
//! adapter costs no extra time per token); greedy decoding by default; left-padded batches.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;
use tunelab::data::{encode_example, EncodeOptions};
use tunelab::train::causal_lm_loss;
use tunelab::{AdapterSet, GenerationConfig, Generator, Model, Transformer};

use super::{Backend, BackendInfo, Generated, OnGenerated};
use crate::hashing;
use crate::suite::Case;

/// Prompts generated together (one forward pass per step for the batch).
pub const DEFAULT_BATCH: usize = 8;

/// A local model, optionally with an adapter applied.
pub struct LocalBackend {
    model: Model,
    adapted: Transformer,
    info: BackendInfo,
    batch: usize,
}

impl LocalBackend {
    /// Loads the base model (GGUF or HF directory).
    pub fn load(model_path: &Path) -> anyhow::Result<Self> {
        let model = Model::load(model_path).with_context(|| format!("loading model {}", model_path.display()))?;
        let sha = hashing::sha256_path(&model.path).with_context(|| format!("hashing {}", model.path.display()))?;
        let info = BackendInfo {
            kind: "local".into(),
            model: model.path.display().to_string(),
            model_sha256: Some(sha),
            adapter: None,
            adapter_sha256: None,
            endpoint: None,
        };
        let adapted = model.transformer.clone();
        Ok(Self { model, adapted, info, batch: DEFAULT_BATCH })
    }

    /// Applies a PEFT adapter directory on the base (replacing any earlier adapter; `None`
    /// returns to the base). The base weights are not reloaded.
    pub fn set_adapter(&mut self, dir: Option<&Path>) -> anyhow::Result<()> {
        match dir {
            Some(dir) => {
                let set = AdapterSet::load(dir, &self.model.transformer).with_context(|| format!("loading adapter {}", dir.display()))?;
                // Folded into the weights: the adapted model at the base model's speed.
                self.adapted = set.merged(&self.model.transformer).with_context(|| format!("merging adapter {}", dir.display()))?;
                self.info.adapter = Some(dir.display().to_string());
                self.info.adapter_sha256 = Some(hashing::sha256_path(dir).with_context(|| format!("hashing {}", dir.display()))?);
            }
            None => {
                self.adapted = self.model.transformer.clone();
                self.info.adapter = None;
                self.info.adapter_sha256 = None;
            }
        }
        Ok(())
    }

    /// Sets how many prompts are generated together.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The model's chat template applied to a case's turns, ready for generation.
    fn prompt(&self, case: &Case) -> anyhow::Result<String> {
        self.model.template.render(&case.messages, true).with_context(|| format!("rendering the chat template for case {}", case.id))
    }
}

impl Backend for LocalBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&self, cases: &[&Case], decoding: &GenerationConfig, done: &mut OnGenerated<'_>) -> anyhow::Result<()> {
        let generator = Generator::new(&self.adapted, &self.model.tokenizer);
        // Similar lengths together: less padding per batch.
        let mut order: Vec<usize> = (0..cases.len()).collect();
        let prompts: Vec<anyhow::Result<String>> = cases.iter().map(|c| self.prompt(c)).collect();
        order.sort_by_key(|&i| prompts[i].as_ref().map(|p| p.len()).unwrap_or(0));
        for chunk in order.chunks(self.batch) {
            let mut batch = Vec::new();
            for &i in chunk {
                match &prompts[i] {
                    Ok(p) => batch.push((i, p.clone())),
                    Err(e) => done(i, Err(anyhow::anyhow!("{e:#}"))),
                }
            }
            if batch.is_empty() {
                continue;
            }
            let texts: Vec<String> = batch.iter().map(|(_, p)| p.clone()).collect();
            let start = Instant::now();
            let outs = generator.generate_batch(&texts, decoding, |_, _| {}).with_context(|| format!("generating for case {}", cases[batch[0].0].id))?;
            let per_case = start.elapsed().as_secs_f64() / batch.len() as f64;
            for ((i, _), g) in batch.iter().zip(outs) {
                done(
                    *i,
                    Ok(Generated {
                        completion_tokens: Some(g.token_ids.len()),
                        prompt_tokens: Some(g.prompt_tokens),
                        text: g.text,
                        latency_s: per_case,
                        finish: format!("{:?}", g.finish_reason).to_lowercase(),
                    }),
                );
            }
        }
        Ok(())
    }

    fn perplexity(&self, case: &Case) -> Option<anyhow::Result<f64>> {
        Some((|| {
            let enc = encode_example(&case.example, &self.model.template, &self.model.tokenizer, &EncodeOptions::default())?;
            let device = self.adapted.device();
            let n = enc.input_ids.len();
            let ids = Tensor::from_vec(enc.input_ids, (1, n), device)?;
            let labels = Tensor::from_vec(enc.labels, (1, n), device)?;
            let (loss, count) = causal_lm_loss(&self.adapted, &ids, &labels)?;
            anyhow::ensure!(count > 0, "case {} has an empty reference answer", case.id);
            let loss = loss.to_scalar::<f32>()? as f64;
            anyhow::ensure!(loss.is_finite(), "case {}: the model's loss on the reference is {loss}", case.id);
            Ok(loss.exp())
        })())
    }
}
