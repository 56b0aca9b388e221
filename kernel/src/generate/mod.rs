//! Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seed),
//! stop tokens and stop strings, streaming through a callback, and many prompts decoded
//! together (continuous batching on the CPU, a left-padded batch elsewhere).

mod continuous;
mod padded;
mod prefix;
mod row;
mod sampler;
mod weights;

pub use weights::DecodeWeights;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Tokenizer, Transformer};
use sampler::Sampling;

/// Decoding settings; the default is greedy with 256 new tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
    /// Seed of the sampler (ignored when greedy).
    pub seed: u64,
    /// Strings that end generation; the text is cut before them.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self { max_new_tokens: 256, temperature: 0.0, top_k: None, top_p: None, seed: 0, stop_strings: Vec::new() }
    }
}

impl GenerationConfig {
    /// Greedy decoding of at most `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, ..Self::default() }
    }

    fn validate(&self) -> Result<()> {
        if self.temperature < 0.0 || !self.temperature.is_finite() {
            return Err(Error::InvalidArgument(format!("temperature must be ≥ 0, got {}", self.temperature)));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::InvalidArgument(format!("top_p must be in (0, 1], got {p}")));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::InvalidArgument("top_k must be ≥ 1".into()));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::InvalidArgument("max_new_tokens must be ≥ 1".into()));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument("a stop string is empty (it would end every answer before it starts)".into()));
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        if self.temperature > 0.0 {
            Sampling::Random { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p }
        } else {
            Sampling::ArgMax
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string was produced.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// The result of generating from one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Generated text (stop token and stop string excluded).
    pub text: String,
    /// Generated token ids (stop token excluded).
    pub token_ids: Vec<u32>,
    /// Number of prompt tokens.
    pub prompt_tokens: usize,
    /// How many of them were not computed for this prompt but copied from a prefix it
    /// shares with the other prompts of its call (prefix caching; same keys and values).
    #[serde(default)]
    pub cached_prompt_tokens: usize,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Seconds spent processing the prompt.
    pub prompt_seconds: f64,
    /// Seconds spent generating after the prompt.
    pub generate_seconds: f64,
}

impl Generation {
    /// Generated tokens per second after the prompt.
    pub fn tokens_per_second(&self) -> f64 {
        if self.generate_seconds > 0.0 {
            self.token_ids.len() as f64 / self.generate_seconds
        } else {
            0.0
        }
    }
}

/// How many new tokens a prompt of `len` tokens may get within `transformer`'s context,
/// `max_new` at most; an error naming `prompt` (e.g. "prompt 3") when the prompt alone
/// fills the context.
fn room_for_answer(transformer: &Transformer, prompt: &str, len: usize, max_new: usize) -> Result<usize> {
    let context = transformer.config().max_position_embeddings;
    if len >= context {
        return Err(Error::InvalidArgument(format!("{prompt} has {len} tokens and does not fit the context of {context}")));
    }
    Ok(max_new.min(context - len))
}

/// Generates text from a transformer and its tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct Generator<'a> {
    transformer: &'a Transformer,
    tokenizer: &'a Tokenizer,
}

impl<'a> Generator<'a> {
    /// A generator over `transformer` with `tokenizer`.
    pub fn new(transformer: &'a Transformer, tokenizer: &'a Tokenizer) -> Self {
        Self { transformer, tokenizer }
    }

    /// Generates from `prompt` (already chat-templated text), calling `on_text` with each
    /// new piece of text as soon as it is final.
    pub fn generate(&self, prompt: &str, cfg: &GenerationConfig, mut on_text: impl FnMut(&str)) -> Result<Generation> {
        let ids = self.tokenizer.encode_with_bos(prompt)?;
        let mut out = self.generate_ids(&[ids], cfg, |_, piece| on_text(piece))?;
        Ok(out.remove(0))
    }

    /// Generates for several prompts at once (one forward pass per step for the whole
    /// batch, rows left-padded). `on_text(row, piece)` streams each row's text.
    pub fn generate_batch(&self, prompts: &[String], cfg: &GenerationConfig, on_text: impl FnMut(usize, &str)) -> Result<Vec<Generation>> {
        let ids = prompts.iter().map(|p| self.tokenizer.encode_with_bos(p)).collect::<Result<Vec<_>>>()?;
        self.generate_ids(&ids, cfg, on_text)
    }

    /// Generates from token-id prompts, all decoding together; results in prompt order.
    /// On the CPU with f32 weights each prompt decodes at its own position
    /// ([`Generator::generate_continuous`]); elsewhere in one left-padded batch.
    pub fn generate_ids(&self, prompts: &[Vec<u32>], cfg: &GenerationConfig, on_text: impl FnMut(usize, &str)) -> Result<Vec<Generation>> {
        cfg.validate()?;
        if !self.transformer.supports_sequence_decoding() {
            return self.generate_padded(prompts, cfg, on_text);
        }
        let mut results: Vec<Option<Result<Generation>>> = prompts.iter().map(|_| None).collect();
        self.generate_continuous(prompts, cfg, prompts.len(), on_text, |i, r| results[i] = Some(r))?;
        results.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|| Err(Error::InvalidArgument(format!("prompt {i} was never generated"))))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_rejected() {
        let bad = GenerationConfig { temperature: -1.0, ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = GenerationConfig { top_p: Some(1.5), ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = GenerationConfig { max_new_tokens: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("max_new_tokens must be ≥ 1"));
        let bad = GenerationConfig { stop_strings: vec!["".into()], ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("stop string is empty"));
        assert!(GenerationConfig::greedy(1).validate().is_ok());
    }
}
