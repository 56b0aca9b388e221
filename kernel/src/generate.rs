//! Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seed),
//! stop tokens and stop strings, streaming through a callback, and batches of prompts
//! decoded together with left padding.

use std::time::Instant;

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Padding, Tokenizer, Transformer};

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
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        let temperature = self.temperature;
        match (self.temperature > 0.0, self.top_k, self.top_p) {
            (false, _, _) => Sampling::ArgMax,
            (true, None, None) => Sampling::All { temperature },
            (true, Some(k), None) => Sampling::TopK { k, temperature },
            (true, None, Some(p)) => Sampling::TopP { p, temperature },
            (true, Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
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

/// Generates text from a transformer and its tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct Generator<'a> {
    transformer: &'a Transformer,
    tokenizer: &'a Tokenizer,
}

/// Tracks one row's output: ids, stop conditions and what has been streamed.
struct RowState {
    ids: Vec<u32>,
    text: String,
    emitted: usize,
    finish: Option<FinishReason>,
}

impl RowState {
    fn new() -> Self {
        Self { ids: Vec::new(), text: String::new(), emitted: 0, finish: None }
    }

    /// Accepts `id`; decodes and checks stop conditions. Returns newly streamable text.
    fn push(&mut self, id: u32, tok: &Tokenizer, cfg: &GenerationConfig) -> Result<Option<String>> {
        if tok.stop_ids().contains(&id) {
            self.finish = Some(FinishReason::Stop);
            return Ok(self.flush());
        }
        self.ids.push(id);
        self.text = tok.decode(&self.ids, true)?;
        if let Some(cut) = cfg.stop_strings.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(cut);
            self.finish = Some(FinishReason::Stop);
            return Ok(self.flush());
        }
        if self.ids.len() >= cfg.max_new_tokens {
            self.finish = Some(FinishReason::Length);
            return Ok(self.flush());
        }
        // Hold back an incomplete UTF-8 sequence and any tail that may start a stop string.
        if self.text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let held = held_back_len(&self.text, &cfg.stop_strings);
        let end = self.text.len() - held;
        Ok(self.take_until(end))
    }

    fn flush(&mut self) -> Option<String> {
        let end = self.text.len();
        self.take_until(end)
    }

    fn take_until(&mut self, end: usize) -> Option<String> {
        if end <= self.emitted || !self.text.is_char_boundary(end) || !self.text.is_char_boundary(self.emitted) {
            return None;
        }
        let piece = self.text[self.emitted..end].to_string();
        self.emitted = end;
        Some(piece)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string.
fn held_back_len(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(move |&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
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

    /// Generates from token-id prompts.
    pub fn generate_ids(&self, prompts: &[Vec<u32>], cfg: &GenerationConfig, mut on_text: impl FnMut(usize, &str)) -> Result<Vec<Generation>> {
        cfg.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!("prompt {i} is empty")));
        }
        let device = self.transformer.device();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let context = self.transformer.config().max_position_embeddings;
        if longest >= context {
            return Err(Error::InvalidArgument(format!("prompt of {longest} tokens does not fit the context of {context}")));
        }
        let max_new = cfg.max_new_tokens.min(context - longest);
        let pad_id = self.tokenizer.pad_id();
        let padding = Padding { left: prompts.iter().map(|p| longest - p.len()).collect() };
        let mut batch = Vec::with_capacity(prompts.len() * longest);
        for (p, &pad) in prompts.iter().zip(&padding.left) {
            batch.extend(std::iter::repeat_n(pad_id, pad));
            batch.extend_from_slice(p);
        }
        let input = Tensor::from_vec(batch, (prompts.len(), longest), device)?;
        let mut cache = self.transformer.new_cache(longest + max_new);
        let mut samplers: Vec<LogitsProcessor> =
            prompts.iter().map(|_| LogitsProcessor::from_sampling(cfg.seed, cfg.sampling())).collect();
        let mut rows: Vec<RowState> = prompts.iter().map(|_| RowState::new()).collect();
        let cfg = GenerationConfig { max_new_tokens: max_new, ..cfg.clone() };

        let start = Instant::now();
        let mut logits = self.transformer.forward_step(&input, &mut cache, &padding)?;
        let prompt_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        loop {
            let mut next = Vec::with_capacity(rows.len());
            for (b, row) in rows.iter_mut().enumerate() {
                if row.finish.is_some() {
                    next.push(pad_id);
                    continue;
                }
                let row_logits = logits.get(b)?;
                let id = samplers[b].sample(&row_logits)?;
                if let Some(piece) = row.push(id, self.tokenizer, &cfg)? {
                    on_text(b, &piece);
                }
                next.push(id);
            }
            if rows.iter().all(|r| r.finish.is_some()) || max_new == 0 {
                break;
            }
            let input = Tensor::from_vec(next, (rows.len(), 1), device)?;
            logits = self.transformer.forward_step(&input, &mut cache, &padding)?;
        }
        let generate_seconds = start.elapsed().as_secs_f64();
        Ok(rows
            .into_iter()
            .zip(prompts)
            .map(|(r, p)| Generation {
                text: r.text,
                token_ids: r.ids,
                prompt_tokens: p.len(),
                finish_reason: r.finish.unwrap_or(FinishReason::Length),
                prompt_seconds,
                generate_seconds,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_prefix_is_held_back() {
        let stops = vec!["###".to_string(), "END".to_string()];
        assert_eq!(held_back_len("hello #", &stops), 1);
        assert_eq!(held_back_len("hello ##", &stops), 2);
        assert_eq!(held_back_len("hello EN", &stops), 2);
        assert_eq!(held_back_len("hello", &stops), 0);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let bad = GenerationConfig { temperature: -1.0, ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = GenerationConfig { top_p: Some(1.5), ..Default::default() };
        assert!(bad.validate().is_err());
    }
}
