//! Seeded, reproducible train / held-out splits.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::load::Dataset;
use crate::error::{Error, Result};

/// How much goes to the held-out part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitSpec {
    /// A fraction of the examples in (0, 1).
    Fraction(f64),
    /// An exact number of examples.
    Count(usize),
}

impl std::str::FromStr for SplitSpec {
    type Err = String;
    /// `0.2` is a fraction, `30` a count.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(Self::Count(n));
        }
        match s.parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(Self::Fraction(f)),
            _ => Err(format!("{s:?} is neither a fraction in (0, 1) nor a count")),
        }
    }
}

impl Dataset {
    /// Splits into `(train, heldout)`: a seeded shuffle picks the held-out examples; both
    /// parts keep file order.
    pub fn split(&self, seed: u64, spec: SplitSpec) -> Result<(Dataset, Dataset)> {
        let n = self.examples.len();
        let k = match spec {
            SplitSpec::Fraction(f) => ((n as f64) * f).round() as usize,
            SplitSpec::Count(c) => c,
        };
        if k == 0 || k >= n {
            return Err(Error::InvalidArgument(format!("a held-out part of {k} leaves no examples on one side of a split of {n}")));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut held: Vec<usize> = order[..k].to_vec();
        let mut train: Vec<usize> = order[k..].to_vec();
        held.sort_unstable();
        train.sort_unstable();
        let pick = |idx: &[usize]| self.with_examples(idx.iter().map(|&i| self.examples[i].clone()).collect());
        Ok((pick(&train), pick(&held)))
    }
}
