//! Continuous batching: up to `slots` prompts decode together, each at its own position with
//! its own cache; when one finishes, the next waiting prompt is prefilled and takes its slot
//! before the next step. A suite's long answers then do not hold short ones back, and no
//! step is spent on padding.

use std::time::Instant;

use super::prefix::SharedPrefix;
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
    cached_prompt_tokens: usize,
    prompt_seconds: f64,
    decode_start: Instant,
}

impl Active {
    /// `a` before its first token is sampled.
    fn unprefilled(a: Admitted) -> Self {
        let (prompt_tokens, cached_prompt_tokens) = (a.ids.len(), a.start);
        Self {
            index: a.index,
            cache: a.cache,
            row: a.row,
            sampler: a.sampler,
            last: 0,
            prompt_tokens,
            cached_prompt_tokens,
            prompt_seconds: 0.0,
            decode_start: Instant::now(),
        }
    }

    fn into_generation(self) -> Generation {
        Generation {
            text: self.row.text,
            token_ids: self.row.ids,
            prompt_tokens: self.prompt_tokens,
            cached_prompt_tokens: self.cached_prompt_tokens,
            finish_reason: self.row.finish.unwrap_or(FinishReason::Length),
            prompt_seconds: self.prompt_seconds,
            generate_seconds: self.decode_start.elapsed().as_secs_f64(),
        }
    }
}

/// A prompt given a slot, not yet prefilled.
struct Admitted {
    index: usize,
    ids: Vec<u32>,
    row: RowState,
    sampler: Sampler,
    /// Its cache, with room for the prompt and the new tokens it may take, holding the
    /// prompt's first `start` positions (a shared prefix's, see [`SharedPrefix`]).
    cache: SequenceCache,
    start: usize,
}

impl Admitted {
    /// The prompt tokens still to prefill.
    fn rest(&self) -> &[u32] {
        &self.ids[self.start..]
    }
}

/// Most prompt rows one prefill step takes: bounds the step's activations (a row is a few
/// KiB per layer) while sharing each weight pass among many short prompts.
const PREFILL_ROWS: usize = 2048;

/// `admitted` split into prefill steps: where prompts prefilled together get exactly what
/// each gets alone (`together`), consecutive prompts with at least two tokens to prefill up
/// to [`PREFILL_ROWS`] rows per step; each on its own otherwise. (A one-token prompt alone
/// is a decoding-kind step, which may read other weights than a prompt step.)
fn prefill_groups(admitted: Vec<Admitted>, together: bool) -> Vec<Vec<Admitted>> {
    let mut groups: Vec<Vec<Admitted>> = Vec::new();
    let mut rows = 0;
    for a in admitted {
        let n = a.rest().len();
        let joins = together && n >= 2 && groups.last().is_some_and(|g| g[0].rest().len() >= 2) && rows + n <= PREFILL_ROWS;
        if joins {
            rows += n;
            groups.last_mut().expect("checked above").push(a);
        } else {
            rows = n;
            groups.push(vec![a]);
        }
    }
    groups
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
        let together = self.transformer.prefills_rows_independently();
        // What every prompt begins with is prefilled once, where that changes no result.
        let prefix = if together { SharedPrefix::prefill(self.transformer, prompts)? } else { None };
        loop {
            // Fill free slots: the prompts taking them are prefilled together where that
            // gives each exactly what it gets alone, so an answer depends on nothing but its
            // prompt (not on which prompts share its steps); else one at a time.
            // Prompts that finish at their first token free their slots again at once.
            loop {
                let mut admitted = Vec::new();
                while active.len() + admitted.len() < slots {
                    let Some(i) = waiting.next() else { break };
                    match self.admit(i, &prompts[i], cfg, prefix.as_ref()) {
                        Ok(a) if a.row.finish.is_some() => on_done(i, Ok(Active::unprefilled(a).into_generation())),
                        Ok(a) => admitted.push(a),
                        Err(e @ Error::InvalidArgument(_)) => on_done(i, Err(e)),
                        Err(e) => return Err(e),
                    }
                }
                if admitted.is_empty() {
                    break;
                }
                for group in prefill_groups(admitted, together) {
                    for a in self.prefill(group, cfg, &mut on_text)? {
                        if a.row.finish.is_some() {
                            on_done(a.index, Ok(a.into_generation()));
                        } else {
                            active.push(a);
                        }
                    }
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

    /// Prompt `i` checked and given its decoding state and cache (already finished, with an
    /// empty cache, when there is no room for new tokens; started with `prefix` where the
    /// prompt begins with it); prefilled later by [`Generator::prefill`]. A prompt that
    /// cannot run is an `InvalidArgument` error here, so it is reported on its own before
    /// any prompt shares a step with it.
    fn admit(&self, i: usize, ids: &[u32], cfg: &GenerationConfig, prefix: Option<&SharedPrefix>) -> Result<Admitted> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument(format!("prompt {i} is empty")));
        }
        let max_new = super::room_for_answer(self.transformer, &format!("prompt {i}"), ids.len(), cfg.max_new_tokens)?;
        let row = RowState::new(max_new);
        let capacity = if row.finish.is_some() { 0 } else { ids.len() + max_new };
        let mut cache = self.transformer.sequence_cache(capacity)?;
        let start = match prefix {
            Some(p) if row.finish.is_none() => p.start(ids, &mut cache)?,
            _ => 0,
        };
        Ok(Admitted { index: i, ids: ids.to_vec(), row, sampler: Sampler::new(cfg.seed, cfg.sampling()), cache, start })
    }

    /// Prefills `group`'s prompts in one step (each with a cache of its own, from the
    /// positions it already holds) and samples each one's first token. Every prompt is
    /// charged the step's time (a shared prefix's one prefill is charged to none).
    fn prefill(&self, mut group: Vec<Admitted>, cfg: &GenerationConfig, on_text: &mut impl FnMut(usize, &str)) -> Result<Vec<Active>> {
        let start = Instant::now();
        let tokens: Vec<u32> = group.iter().flat_map(|a| a.rest().iter().copied()).collect();
        let seq: Vec<usize> = group.iter().enumerate().flat_map(|(s, a)| std::iter::repeat_n(s, a.rest().len())).collect();
        let logits = self.transformer.step_sequences(&tokens, &seq, &mut group.iter_mut().map(|a| &mut a.cache).collect::<Vec<_>>())?;
        let prompt_seconds = start.elapsed().as_secs_f64();
        let mut out = Vec::with_capacity(group.len());
        for (s, mut a) in group.into_iter().enumerate() {
            let first = a.sampler.sample(&logits.get(s)?)?;
            if let Some(piece) = a.row.push(first, self.tokenizer, cfg)? {
                on_text(a.index, &piece);
            }
            let mut active = Active::unprefilled(a);
            active.last = first;
            active.prompt_seconds = prompt_seconds;
            out.push(active);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(lengths: &[usize]) -> Vec<Admitted> {
        use crate::model::{Architecture, ModelConfig, Transformer, Weights};
        let cfg = ModelConfig::tiny(Architecture::Llama);
        let weights = Weights::random(&cfg, 4, candle_core::DType::F32, &candle_core::Device::Cpu).expect("random weights");
        let transformer = Transformer::load(&cfg, &weights).expect("a tiny model");
        let admitted = |index: usize, n: usize| Admitted {
            index,
            ids: vec![1; n],
            row: RowState::new(4),
            sampler: Sampler::new(0, GenerationConfig::greedy(4).sampling()),
            cache: transformer.sequence_cache(0).expect("an empty cache"),
            start: 0,
        };
        lengths.iter().enumerate().map(|(index, &n)| admitted(index, n)).collect()
    }

    fn shapes(groups: &[Vec<Admitted>]) -> Vec<Vec<usize>> {
        groups.iter().map(|g| g.iter().map(|a| a.index).collect()).collect()
    }

    #[test]
    fn prompts_share_prefill_steps_up_to_the_row_budget_and_one_token_prompts_go_alone() {
        let groups = prefill_groups(admitted(&[40, 50, 1, 30, PREFILL_ROWS - 40, 20, PREFILL_ROWS + 5, 3]), true);
        assert_eq!(shapes(&groups), vec![vec![0, 1], vec![2], vec![3, 4], vec![5], vec![6], vec![7]]);
        let alone = prefill_groups(admitted(&[40, 50, 30]), false);
        assert_eq!(shapes(&alone), vec![vec![0], vec![1], vec![2]]);
    }
}
