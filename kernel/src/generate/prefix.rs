//! Prefix caching for continuous batching: the tokens every prompt of a call begins with (a
//! chat template's system turn and the user turn's header, a suite's shared instruction)
//! are prefilled once, and each prompt's cache starts with a copy of their keys and values.
//!
//! Only for models that prefill rows independently
//! ([`Transformer::prefills_rows_independently`]): there a row's keys, values and output
//! depend on nothing but its own token and the positions before it, so a prompt prefilled
//! from the copied prefix gets exactly what its own full prefill gives.

use crate::error::Result;
use crate::model::{SequenceCache, Transformer};

/// Fewest tokens worth a shared prefill (a prefill of one token is a decoding-kind step).
const MIN_PREFIX: usize = 2;

/// Fewest tokens a prompt must have past the prefix to start from it: a prompt's remaining
/// rows then still make a prompt-kind step, which reads the same weights as its full prefill.
const MIN_REST: usize = 2;

/// The prefix a call's prompts share, prefilled.
pub(super) struct SharedPrefix {
    ids: Vec<u32>,
    cache: SequenceCache,
}

impl SharedPrefix {
    /// The longest prefix of every non-empty prompt, prefilled on `transformer`, where it is
    /// at least [`MIN_PREFIX`] tokens and at least two prompts that fit the model's context
    /// go on past it by [`MIN_REST`] tokens or more (else `None`: nothing to share). Prompts
    /// that cannot run are left to be reported one by one, as without a shared prefix.
    pub(super) fn prefill(transformer: &Transformer, prompts: &[Vec<u32>]) -> Result<Option<Self>> {
        let len = common_prefix_len(prompts.iter().filter(|p| !p.is_empty()).map(Vec::as_slice));
        let fits = |p: &Vec<u32>| super::room_for_answer(transformer, "a prompt", p.len(), 0).is_ok();
        let users = prompts.iter().filter(|p| p.len() >= len + MIN_REST && fits(p)).count();
        if len < MIN_PREFIX || users < 2 {
            return Ok(None);
        }
        let ids = prompts.iter().find(|p| !p.is_empty()).expect("a prefix of at least two tokens comes from a prompt")[..len].to_vec();
        let (cache, _) = transformer.prefill(&ids, len)?;
        Ok(Some(Self { ids, cache }))
    }

    /// Starts `cache` (empty, sized for `ids` and its new tokens) with the prefix where `ids`
    /// goes on past it far enough; returns how many of `ids`' positions it now holds.
    pub(super) fn start(&self, ids: &[u32], cache: &mut SequenceCache) -> Result<usize> {
        if ids.len() < self.ids.len() + MIN_REST || !ids.starts_with(&self.ids) || cache.capacity() < ids.len() {
            return Ok(0);
        }
        cache.start_with(&self.cache)?;
        Ok(self.ids.len())
    }
}

/// Length of the longest prefix all `prompts` share (0 for none).
fn common_prefix_len<'a>(mut prompts: impl Iterator<Item = &'a [u32]>) -> usize {
    let Some(first) = prompts.next() else { return 0 };
    prompts.fold(first.len(), |len, p| first[..len].iter().zip(p).take_while(|(a, b)| a == b).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_shared_only_by_prompts_that_fit_the_context() {
        use crate::model::{Architecture, ModelConfig, Weights};
        let cfg = ModelConfig::tiny(Architecture::Llama);
        let weights = Weights::random(&cfg, 4, candle_core::DType::F32, &candle_core::Device::Cpu).expect("random weights");
        let transformer = Transformer::load(&cfg, &weights).expect("a tiny model");
        let context = cfg.max_position_embeddings;
        let prompt = |len: usize, last: u32| -> Vec<u32> { (0..len as u32).map(|t| t % 7).chain([last, last]).collect() };
        let fit = [prompt(5, 1), prompt(5, 2), prompt(5, 3)];
        let shared = SharedPrefix::prefill(&transformer, &fit).unwrap().expect("three prompts share five tokens");
        assert_eq!(shared.ids.len(), 5);
        let mut cache = transformer.sequence_cache(10).unwrap();
        assert_eq!(shared.start(&prompt(8, 4), &mut cache).unwrap(), 5);
        assert_eq!(cache.len(), 5);
        // Prompts past the context share nothing (prefilling their prefix would fail the
        // whole call; each is reported on its own instead).
        let long = prompt(context, 0);
        let too_long = [long.clone(), [long.clone(), vec![1, 2]].concat(), [long, vec![3, 4]].concat()];
        assert!(SharedPrefix::prefill(&transformer, &too_long).unwrap().is_none());
    }

    #[test]
    fn the_common_prefix_is_the_longest_every_prompt_begins_with() {
        let prompts: Vec<&[u32]> = vec![&[1, 2, 3, 4, 5], &[1, 2, 3, 9], &[1, 2, 3, 4]];
        assert_eq!(common_prefix_len(prompts.into_iter()), 3);
        assert_eq!(common_prefix_len([&[1u32, 2][..], &[1, 2, 3]].into_iter()), 2);
        assert_eq!(common_prefix_len([&[1u32, 2][..], &[7, 2]].into_iter()), 0);
        assert_eq!(common_prefix_len([&[4u32, 5][..]].into_iter()), 2);
        assert_eq!(common_prefix_len(std::iter::empty()), 0);
    }
}
