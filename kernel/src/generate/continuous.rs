//! Continuous batching: up to `slots` prompts decode together, each at its own position with
//! its own cache; when one finishes, the next waiting prompt is prefilled and takes its slot
//! before the next step. A suite's long answers then do not hold short ones back, and no
//! step is spent on padding.

use std::time::Instant;

use super::row::RowState;
use super::sampler::Sampler;
use super::{FinishReason, Generation, GenerationConfig, Generator};
use crate::error::{Error, Result};
use crate::model::SequenceCache;

/// A prompt that holds a slot.
struct Active {
    index: usize,
    cache: SequenceCache,
    row: RowState,
    sampler: Sampler,
    /// The token to feed next (the last one sampled).
    last: u32,
    prompt_tokens: usize,
    prompt_seconds: f64,
    decode_start: Instant,
}

impl Active {
    fn into_generation(self) -> Generation {
        Generation {
            text: self.row.text,
            token_ids: self.row.ids,
            prompt_tokens: self.prompt_tokens,
            finish_reason: self.row.finish.unwrap_or(FinishReason::Length),
            prompt_seconds: self.prompt_seconds,
            generate_seconds: self.decode_start.elapsed().as_secs_f64(),
        }
    }
}

impl Generator<'_> {
    /// Generates for every prompt with at most `slots` sequences decoding together (CPU, f32
    /// weights: see `Transformer::supports_sequence_decoding`).
    ///
    /// `on_text(i, piece)` streams prompt `i`'s text as it becomes final; `on_done(i, result)`
    /// reports prompt `i` as soon as it finishes, so results arrive in finishing order. A
    /// prompt that cannot run (empty, or filling the model's context) is reported there as
    /// an error and the others go on; an error of the model itself ends the call.
    pub fn generate_continuous(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerationConfig,
        slots: usize,
        mut on_text: impl FnMut(usize, &str),
        mut on_done: impl FnMut(usize, Result<Generation>),
    ) -> Result<()> {
        cfg.validate()?;
        let slots = slots.max(1);
        let mut waiting = 0..prompts.len();
        let mut active: Vec<Active> = Vec::with_capacity(slots);
        loop {
            // Fill free slots. Each prompt is prefilled on its own, so its answer depends on
            // nothing but itself (not on which prompts share its steps).
            while active.len() < slots {
                let Some(i) = waiting.next() else { break };
                match self.admit(i, &prompts[i], cfg, &mut on_text) {
                    Ok(a) if a.row.finish.is_some() => on_done(i, Ok(a.into_generation())),
                    Ok(a) => active.push(a),
                    Err(e @ Error::InvalidArgument(_)) => on_done(i, Err(e)),
                    Err(e) => return Err(e),
                }
            }
            if active.is_empty() {
                return Ok(());
            }
            let tokens: Vec<u32> = active.iter().map(|a| a.last).collect();
            let mut caches: Vec<&mut SequenceCache> = active.iter_mut().map(|a| &mut a.cache).collect();
            let logits = self.transformer.decode_rows(&tokens, &mut caches)?;
            for (r, a) in active.iter_mut().enumerate() {
                a.last = a.sampler.sample(&logits.get(r)?)?;
                if let Some(piece) = a.row.push(a.last, self.tokenizer, cfg)? {
                    on_text(a.index, &piece);
                }
            }
            let mut r = 0;
            while r < active.len() {
                if active[r].row.finish.is_some() {
                    let a = active.swap_remove(r);
                    on_done(a.index, Ok(a.into_generation()));
                } else {
                    r += 1;
                }
            }
        }
    }

    /// Prompt `i` prefilled into a slot of its own, with its first token sampled (or, with
    /// no room for new tokens, already finished).
    fn admit(&self, i: usize, ids: &[u32], cfg: &GenerationConfig, on_text: &mut impl FnMut(usize, &str)) -> Result<Active> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument(format!("prompt {i} is empty")));
        }
        let context = self.transformer.config().max_position_embeddings;
        if ids.len() >= context {
            return Err(Error::InvalidArgument(format!("prompt {i} has {} tokens and does not fit the context of {context}", ids.len())));
        }
        let max_new = cfg.max_new_tokens.min(context - ids.len());
        let start = Instant::now();
        let mut row = RowState::new(max_new);
        let mut sampler = Sampler::new(cfg.seed, cfg.sampling());
        let (cache, last) = if row.finish.is_some() {
            // Nothing will be decoded: an empty cache.
            (self.transformer.sequence_cache(0)?, 0)
        } else {
            let (cache, logits) = self.transformer.prefill(ids, ids.len() + max_new)?;
            let first = sampler.sample(&logits)?;
            if let Some(piece) = row.push(first, self.tokenizer, cfg)? {
                on_text(i, &piece);
            }
            (cache, first)
        };
        let prompt_seconds = start.elapsed().as_secs_f64();
        Ok(Active { index: i, cache, row, sampler, last, prompt_tokens: ids.len(), prompt_seconds, decode_start: Instant::now() })
    }
}
