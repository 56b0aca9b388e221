//! Picks each next token from a row of logits: greedy (the first largest logit), or drawn
//! from a seeded generator after temperature, top-k and top-p.
//!
//! The same rules and random stream as candle-transformers' `LogitsProcessor`, which this
//! replaced: the library needs a sampler, not that crate's hundred model implementations,
//! which every notebook cell had to load and link.

use candle_core::{DType, Tensor, D};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::SeedableRng;

use crate::error::{Error, Result};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sampling {
    /// The most likely token (the first one on a tie).
    ArgMax,
    /// Sampled after temperature, optionally from the `top_k` most likely tokens and then from
    /// the smallest set whose probability reaches `top_p`.
    Random { temperature: f64, top_k: Option<usize>, top_p: Option<f64> },
}

/// A sampler for one sequence: its rule and its own seeded generator.
pub(crate) struct Sampler {
    rng: rand::rngs::StdRng,
    sampling: Sampling,
}

impl Sampler {
    /// A sampler whose draws depend only on `seed`.
    pub(crate) fn new(seed: u64, sampling: Sampling) -> Self {
        Self { rng: rand::rngs::StdRng::seed_from_u64(seed), sampling }
    }

    /// The next token from `logits`, a vector over the vocabulary.
    pub(crate) fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let Sampling::Random { temperature, top_k, top_p } = self.sampling else {
            return Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?);
        };
        let scaled = (logits.to_dtype(DType::F32)? / temperature)?;
        let mut probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&scaled)?.to_vec1()?;
        // Top-p of 1 (or more) keeps every token.
        let top_p = top_p.filter(|&p| p > 0.0 && p < 1.0).map(|p| p as f32);
        match top_k.filter(|&k| k < probs.len()) {
            None => {
                if let Some(p) = top_p {
                    keep_nucleus(&mut probs, p);
                }
                self.draw(&probs)
            }
            Some(k) => {
                let mut order: Vec<usize> = (0..probs.len()).collect();
                let (most_likely, _, _) = order.select_nth_unstable_by(k, |&i, &j| probs[j].total_cmp(&probs[i]));
                let mut kept: Vec<f32> = most_likely.iter().map(|&i| probs[i]).collect();
                // The nucleus is taken within the k tokens, unless they hold less than p.
                if let Some(p) = top_p.filter(|&p| p < kept.iter().sum::<f32>()) {
                    keep_nucleus(&mut kept, p);
                }
                let pick = self.draw(&kept)?;
                Ok(most_likely[pick as usize] as u32)
            }
        }
    }

    /// An index drawn with probability proportional to `weights`.
    fn draw(&mut self, weights: &[f32]) -> Result<u32> {
        let distribution = WeightedIndex::new(weights).map_err(|e| Error::InvalidArgument(format!("cannot sample from these probabilities: {e}")))?;
        Ok(distribution.sample(&mut self.rng) as u32)
    }
}

/// Zeroes every probability outside the smallest set of most likely tokens whose sum
/// reaches `p` (nucleus sampling).
fn keep_nucleus(probs: &mut [f32], p: f32) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
    let mut total = 0.0;
    for i in order {
        if total >= p {
            probs[i] = 0.0;
        } else {
            total += probs[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        let mut s = Sampler::new(0, Sampling::ArgMax);
        assert_eq!(s.sample(&logits(&[0.5, 2.0, -1.0, 2.0])).unwrap(), 1);
    }

    #[test]
    fn top_k_of_one_is_greedy_whatever_the_seed() {
        let x = logits(&[0.1, 0.3, 3.0, 0.2, 2.9]);
        for seed in 0..20 {
            let mut s = Sampler::new(seed, Sampling::Random { temperature: 5.0, top_k: Some(1), top_p: None });
            assert_eq!(s.sample(&x).unwrap(), 2);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities ≈ [0.665, 0.245, 0.090]: p = 0.5 keeps the first token alone,
        // p = 0.8 the first two.
        let x = logits(&[2.0, 1.0, 0.0]);
        let draws = |p: f64| -> std::collections::BTreeSet<u32> {
            let mut s = Sampler::new(7, Sampling::Random { temperature: 1.0, top_k: None, top_p: Some(p) });
            (0..300).map(|_| s.sample(&x).unwrap()).collect()
        };
        assert_eq!(draws(0.5), [0].into());
        assert_eq!(draws(0.8), [0, 1].into());
        assert_eq!(draws(1.0), [0, 1, 2].into());
    }

    #[test]
    fn top_k_then_top_p_takes_the_nucleus_within_the_k_tokens() {
        let x = logits(&[0.0, 2.0, 1.0, 1.9, -3.0]);
        let mut s = Sampler::new(3, Sampling::Random { temperature: 1.0, top_k: Some(3), top_p: Some(0.6) });
        let drawn: std::collections::BTreeSet<u32> = (0..300).map(|_| s.sample(&x).unwrap()).collect();
        assert_eq!(drawn, [1, 3].into(), "the two most likely tokens reach 0.6 of the top three's mass");
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_another_seed_others() {
        let x = logits(&[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
        let run = |seed| {
            let mut s = Sampler::new(seed, Sampling::Random { temperature: 1.0, top_k: None, top_p: None });
            (0..40).map(|_| s.sample(&x).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn probabilities_that_cannot_be_sampled_are_an_error() {
        let mut s = Sampler::new(0, Sampling::Random { temperature: 1.0, top_k: None, top_p: None });
        assert!(s.sample(&logits(&[f32::NAN, 1.0])).is_err());
    }
}
