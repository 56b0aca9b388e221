//! Length-grouped batching: examples of similar length share a batch so little compute is
//! spent on padding; batches are right-padded and padding is never learned.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::tokenize::{Encoded, IGNORE_INDEX};

/// One padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, seq]` token ids (u32), right-padded.
    pub input_ids: Tensor,
    /// `[batch, seq]` labels (i64), [`IGNORE_INDEX`] on prompt and padding.
    pub labels: Tensor,
    /// Number of non-padding tokens.
    pub tokens: usize,
    /// Number of labelled tokens.
    pub label_tokens: usize,
}

impl Batch {
    /// Pads `examples` to the longest one with `pad_id`.
    pub fn collate(examples: &[&Encoded], pad_id: u32, device: &Device) -> candle_core::Result<Self> {
        let b = examples.len();
        let t = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(b * t);
        let mut labels = Vec::with_capacity(b * t);
        for e in examples {
            ids.extend_from_slice(&e.input_ids);
            ids.extend(std::iter::repeat_n(pad_id, t - e.input_ids.len()));
            labels.extend_from_slice(&e.labels);
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, t - e.labels.len()));
        }
        let tokens = examples.iter().map(|e| e.input_ids.len()).sum();
        let label_tokens = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
        Ok(Self { input_ids: Tensor::from_vec(ids, (b, t), device)?, labels: Tensor::from_vec(labels, (b, t), device)?, tokens, label_tokens })
    }
}

/// The order of one epoch: batches of example indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// Each batch's example indices.
    pub batches: Vec<Vec<usize>>,
}

impl BatchPlan {
    /// Seeded plan for `epoch`: shuffle, group into mega-batches of 16 batches, sort each by
    /// length (longest first), cut into batches, shuffle the batch order.
    pub fn new(lengths: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Self {
        let batch_size = batch_size.max(1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.shuffle(&mut rng);
        let mut batches = Vec::new();
        for mega in order.chunks(batch_size * 16) {
            let mut mega = mega.to_vec();
            mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
            batches.extend(mega.chunks(batch_size).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        Self { batches }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_example_once_and_groups_lengths() {
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 91 + 5).collect();
        let plan = BatchPlan::new(&lengths, 4, 7, 0);
        let mut all: Vec<usize> = plan.batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(plan, BatchPlan::new(&lengths, 4, 7, 0), "same seed and epoch, same plan");
        assert_ne!(plan, BatchPlan::new(&lengths, 4, 7, 1), "epochs differ");
        let spread: usize = plan.batches.iter().map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() - b.iter().map(|&i| lengths[i]).min().unwrap()).sum();
        let random_spread: usize = (0..25)
            .map(|k| {
                let b = &lengths[k * 4..k * 4 + 4];
                b.iter().max().unwrap() - b.iter().min().unwrap()
            })
            .sum();
        assert!(spread * 3 < random_spread, "grouping did not reduce padding: {spread} vs {random_spread}");
    }

    #[test]
    fn padding_is_never_labelled() {
        let a = Encoded { input_ids: vec![5, 6, 7], labels: vec![-100, 6, 7], prompt_tokens: 1, response_tokens: 2, truncated: false };
        let b = Encoded { input_ids: vec![5], labels: vec![5], prompt_tokens: 0, response_tokens: 1, truncated: false };
        let batch = Batch::collate(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap(), vec![vec![5, 6, 7], vec![5, 0, 0]]);
        assert_eq!(batch.labels.to_vec2::<i64>().unwrap(), vec![vec![-100, 6, 7], vec![5, -100, -100]]);
        assert_eq!((batch.tokens, batch.label_tokens), (4, 3));
    }
}
