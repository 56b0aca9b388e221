//! The local backend: a base model loaded once, with zero or more LoRA adapters that can be
//! swapped without reloading it (each folded into a copy of the projection weights, so an
//! adapter costs no extra time per token); greedy decoding by default; cases decoded with
//! continuous batching (a finished case's slot takes the next case at once).

use std::path::Path;

use anyhow::Context;
use candle_core::Tensor;
use tunelab::data::{encode_example, EncodeOptions};
use tunelab::train::causal_lm_loss;
use tunelab::{AdapterSet, GenerationConfig, Generator, Model, Transformer};

use super::{Backend, BackendInfo, Generated, OnGenerated};
use crate::hashing;
use crate::suite::Case;

/// Cases decoded together (one forward pass per step for all of them).
pub const DEFAULT_BATCH: usize = 32;

/// Most cases decoded together: up to this many rows, each row's arithmetic is the same
/// whatever the batch (so answers do not depend on `--batch`).
pub const MAX_BATCH: usize = tunelab::model::DETERMINISTIC_DECODE_ROWS;

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

    /// Sets how many prompts are generated together (1 to [`MAX_BATCH`]).
    pub fn with_batch(mut self, batch: usize) -> anyhow::Result<Self> {
        anyhow::ensure!((1..=MAX_BATCH).contains(&batch), "the batch must be between 1 and {MAX_BATCH} cases, got {batch}");
        self.batch = batch;
        Ok(self)
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
        let (mut prompts, mut case_of) = (Vec::with_capacity(cases.len()), Vec::with_capacity(cases.len()));
        for (i, case) in cases.iter().enumerate() {
            let ids = self.prompt(case).and_then(|p| {
                self.model.tokenizer.encode_with_bos(&p).with_context(|| format!("tokenizing the prompt of case {}", case.id))
            });
            match ids {
                Ok(ids) => {
                    prompts.push(ids);
                    case_of.push(i);
                }
                Err(e) => done(i, Err(e)),
            }
        }
        let report = |g: tunelab::Generation| Generated {
            completion_tokens: Some(g.token_ids.len()),
            prompt_tokens: Some(g.prompt_tokens),
            latency_s: g.prompt_seconds + g.generate_seconds,
            finish: format!("{:?}", g.finish_reason).to_lowercase(),
            text: g.text,
        };
        if self.adapted.supports_sequence_decoding() {
            // Continuous batching: a finished case's slot takes the next case at once.
            return generator
                .generate_continuous(&prompts, decoding, self.batch, |_, _| {}, |j, r| {
                    let case = cases[case_of[j]];
                    done(case_of[j], r.map(report).with_context(|| format!("generating for case {}", case.id)))
                })
                .context("generating");
        }
        for (chunk, cases_of_chunk) in prompts.chunks(self.batch).zip(case_of.chunks(self.batch)) {
            let outs = generator.generate_ids(chunk, decoding, |_, _| {}).with_context(|| format!("generating for case {}", cases[cases_of_chunk[0]].id))?;
            for (&i, g) in cases_of_chunk.iter().zip(outs) {
                done(i, Ok(report(g)));
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
