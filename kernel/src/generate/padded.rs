//! Decoding in one left-padded batch: every row steps until the longest finishes. The
//! path for devices without per-sequence decoding (see `Transformer::decode_rows`).

use std::time::Instant;

use candle_core::Tensor;

use super::row::RowState;
use super::sampler::Sampler;
use super::{FinishReason, Generation, GenerationConfig, Generator};
use crate::error::{Error, Result};
use crate::model::Padding;

impl Generator<'_> {
    /// Generates from token-id prompts in one left-padded batch (one forward pass per step
    /// for all rows, every row stepped until the last one finishes); for devices without
    /// sequence decoding.
    pub(super) fn generate_padded(&self, prompts: &[Vec<u32>], cfg: &GenerationConfig, mut on_text: impl FnMut(usize, &str)) -> Result<Vec<Generation>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!("prompt {i} is empty")));
        }
        let device = self.transformer.device();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max_new = super::room_for_answer(self.transformer, "the longest prompt", longest, cfg.max_new_tokens)?;
        let pad_id = self.tokenizer.pad_id();
        let padding = Padding { left: prompts.iter().map(|p| longest - p.len()).collect() };
        let mut batch = Vec::with_capacity(prompts.len() * longest);
        for (p, &pad) in prompts.iter().zip(&padding.left) {
            batch.extend(std::iter::repeat_n(pad_id, pad));
            batch.extend_from_slice(p);
        }
        let input = Tensor::from_vec(batch, (prompts.len(), longest), device)?;
        let mut cache = self.transformer.new_cache(longest + max_new);
        let mut samplers: Vec<Sampler> = prompts.iter().map(|_| Sampler::new(cfg.seed, cfg.sampling())).collect();
        let mut rows: Vec<RowState> = prompts.iter().map(|_| RowState::new(max_new)).collect();

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
                if let Some(piece) = row.push(id, self.tokenizer, cfg)? {
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
                cached_prompt_tokens: 0,
                finish_reason: r.finish.unwrap_or(FinishReason::Length),
                prompt_seconds,
                generate_seconds,
            })
            .collect())
    }
}
