//! The local backend: a base model loaded once, with zero or more LoRA adapters that can be
//! swapped without reloading it (each folded into a copy of the projection weights, so an
//! adapter costs no extra time per token); greedy decoding by default; cases decoded with
//! continuous batching (a finished case's slot takes the next case at once).

use std::path::Path;

use candle_core::Tensor;
use tunelab::data::{encode_example, EncodeOptions};
use tunelab::train::causal_lm_loss;
use tunelab::{AdapterSet, DecodeWeights, GenerationConfig, Generator, Model, Transformer};

use super::{Backend, BackendInfo, Generated, OnGenerated};
use crate::case::Case;
use crate::error::{Error, Result};
use crate::hashing;
use crate::scorers::ReferenceModel;

/// Cases decoded together (one forward pass per step for all of them).
pub const DEFAULT_BATCH: usize = 32;

/// Most cases decoded together: up to this many rows, each row's arithmetic is the same
/// whatever the batch (so answers do not depend on `--batch`).
pub const MAX_BATCH: usize = tunelab::model::DETERMINISTIC_DECODE_ROWS;

/// A local model, optionally with an adapter applied.
pub struct LocalBackend {
    model: Model,
    /// The adapter applied, if any.
    adapter: Option<AdapterSet>,
    /// The weights generation reads.
    weights: DecodeWeights,
    /// The base with the adapter, prepared for `weights`.
    adapted: Transformer,
    info: BackendInfo,
    batch: usize,
}

impl LocalBackend {
    /// Loads the base model (GGUF or HF directory) on the CPU.
    pub fn load(model_path: &Path) -> Result<Self> {
        Self::load_on(model_path, &candle_core::Device::Cpu)
    }

    /// Loads the base model on `device` (a GPU: see `tunelab::parse_device`); the run
    /// records a device other than the CPU.
    pub fn load_on(model_path: &Path, device: &candle_core::Device) -> Result<Self> {
        let model = Model::load_on(model_path, device)?;
        let sha = hashing::sha256_path(&model.path).map_err(|e| Error::reading(&model.path, e))?;
        let info = BackendInfo {
            kind: "local".into(),
            model: model.path.display().to_string(),
            model_sha256: Some(sha),
            adapter: None,
            adapter_sha256: None,
            endpoint: None,
            weights: None,
            device: (!device.is_cpu()).then(|| tunelab::device::device_name(device)),
        };
        let adapted = model.transformer.clone();
        Ok(Self { model, adapter: None, weights: DecodeWeights::default(), adapted, info, batch: DEFAULT_BATCH })
    }

    /// Generates (and scores perplexity) with `weights` instead of the exact f32 weights;
    /// rounding weights are recorded in the backend's information and the cache key.
    pub fn with_weights(mut self, weights: DecodeWeights) -> Result<Self> {
        self.weights = weights;
        self.info.weights = (!weights.is_exact()).then(|| weights.name().to_string());
        self.prepare()?;
        Ok(self)
    }

    /// Rebuilds the model generation reads from the base, the adapter and the weights.
    fn prepare(&mut self) -> Result<()> {
        self.adapted = self.weights.prepare(&self.model.transformer, self.adapter.as_ref())?;
        Ok(())
    }

    /// Applies a PEFT adapter directory on the base (replacing any earlier adapter; `None`
    /// returns to the base). The base weights are not reloaded.
    pub fn set_adapter(&mut self, dir: Option<&Path>) -> Result<()> {
        let adapter = dir.map(|d| AdapterSet::load_for(d, &self.model)).transpose()?;
        // Attached where the base decodes from packed blocks, folded in elsewhere.
        let adapted = self.weights.prepare(&self.model.transformer, adapter.as_ref())?;
        let sha = dir.map(|d| hashing::sha256_path(d).map_err(|e| Error::reading(d, e))).transpose()?;
        self.info.adapter = dir.map(|d| d.display().to_string());
        self.info.adapter_sha256 = sha;
        self.adapter = adapter;
        self.adapted = adapted;
        Ok(())
    }

    /// Sets how many prompts are generated together (1 to [`MAX_BATCH`]).
    pub fn with_batch(mut self, batch: usize) -> Result<Self> {
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(Error::Invalid(format!("the batch must be between 1 and {MAX_BATCH} cases, got {batch}")));
        }
        self.batch = batch;
        Ok(self)
    }

    /// The model's chat template applied to a case's turns, ready for generation.
    fn prompt_ids(&self, case: &Case) -> Result<Vec<u32>> {
        let text = self.model.template.render(&case.messages, true)?;
        Ok(self.model.tokenizer.encode_with_bos(&text)?)
    }
}

impl Backend for LocalBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&self, cases: &[&Case], decoding: &GenerationConfig, done: &mut OnGenerated<'_>) -> Result<()> {
        let generator = Generator::new(&self.adapted, &self.model.tokenizer);
        let (mut prompts, mut case_of) = (Vec::with_capacity(cases.len()), Vec::with_capacity(cases.len()));
        for (i, case) in cases.iter().enumerate() {
            match self.prompt_ids(case) {
                Ok(ids) => {
                    prompts.push(ids);
                    case_of.push(i);
                }
                Err(e) => done(i, Err(e.for_case(&case.id))),
            }
        }
        let report = |g: tunelab::Generation| Generated {
            completion_tokens: Some(g.token_ids.len()),
            prompt_tokens: Some(g.prompt_tokens),
            cached_prompt_tokens: Some(g.cached_prompt_tokens),
            latency_s: g.prompt_seconds + g.generate_seconds,
            finish: format!("{:?}", g.finish_reason).to_lowercase(),
            text: g.text,
        };
        if self.adapted.supports_sequence_decoding() {
            // Continuous batching: a finished case's slot takes the next case at once.
            return Ok(generator.generate_continuous(
                &prompts,
                decoding,
                self.batch,
                |_, _| {},
                |j, r| {
                    let case = cases[case_of[j]];
                    done(case_of[j], r.map(report).map_err(|e| Error::from(e).for_case(&case.id)))
                },
            )?);
        }
        for (chunk, cases_of_chunk) in prompts.chunks(self.batch).zip(case_of.chunks(self.batch)) {
            let outs = generator.generate_ids(chunk, decoding, |_, _| {}).map_err(|e| Error::from(e).for_case(&cases[cases_of_chunk[0]].id))?;
            for (&i, g) in cases_of_chunk.iter().zip(outs) {
                done(i, Ok(report(g)));
            }
        }
        Ok(())
    }

    fn reference_model(&self) -> Option<&dyn ReferenceModel> {
        Some(self)
    }
}

impl ReferenceModel for LocalBackend {
    fn perplexity(&self, case: &Case) -> Result<f64> {
        let kernel = |e: candle_core::Error| Error::from(tunelab::Error::from(e));
        let enc = encode_example(&case.example(), &self.model.template, &self.model.tokenizer, &EncodeOptions::default())?;
        let device = self.adapted.device();
        let n = enc.input_ids.len();
        let ids = Tensor::from_vec(enc.input_ids, (1, n), device).map_err(kernel)?;
        let labels = Tensor::from_vec(enc.labels, (1, n), device).map_err(kernel)?;
        let (loss, count) = causal_lm_loss(&self.adapted, &ids, &labels)?;
        if count == 0 {
            return Err(Error::Invalid(format!("case {} has an empty reference answer", case.id)));
        }
        let loss = loss.to_scalar::<f32>().map_err(kernel)? as f64;
        if !loss.is_finite() {
            return Err(Error::Invalid(format!("case {}: the model's loss on the reference is {loss}", case.id)));
        }
        Ok(loss.exp())
    }
}
