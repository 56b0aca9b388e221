//! Statistics for summaries and comparisons. Here: means with percentile-bootstrap
//! confidence intervals (cases resampled with replacement, seeded so summaries are
//! reproducible). [`paired`]: two runs on the same cases; [`proportion`]: pass-rate
//! intervals that stay honest at small n; [`hypothesis`]: McNemar's exact test and Holm's
//! correction; [`normal`]: the normal distribution the intervals and power use;
//! [`agreement`]: Krippendorff's α and Cohen's κ between reviewers; [`bradley_terry`]:
//! strengths from pairwise preferences.
//! Each is checked against values recorded from scipy and statsmodels
//! (`tests/vectors/stats.json`, written by `tests/vectors/record_stats.py`).

pub mod agreement;
pub mod bradley_terry;
pub mod hypothesis;
pub mod normal;
pub mod paired;
pub mod proportion;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Resamples used for an interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A mean with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// Sample mean.
    pub mean: f64,
    /// Lower bound of the interval.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
    /// Sample size.
    pub n: usize,
}

/// The mean of `values` with a percentile-bootstrap interval at `level` (e.g. 0.95).
/// An empty sample gives NaN; a single value gives a zero-width interval.
pub fn bootstrap_mean(values: &[f64], level: f64, resamples: usize, seed: u64) -> Estimate {
    let n = values.len();
    if n == 0 {
        return Estimate { mean: f64::NAN, low: f64::NAN, high: f64::NAN, n };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Estimate { mean, low: mean, high: mean, n };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Estimate { mean, low: quantile(&means, alpha), high: quantile(&means, 1.0 - alpha), n }
}

/// Linear-interpolated quantile of sorted data (numpy's default method).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_brackets_the_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..10).map(|i| f64::from(i % 2)).collect();
        let large: Vec<f64> = (0..1000).map(|i| f64::from(i % 2)).collect();
        let a = bootstrap_mean(&small, 0.95, 2000, 1);
        let b = bootstrap_mean(&large, 0.95, 2000, 1);
        assert!(a.low < 0.5 && a.high > 0.5 && b.low < 0.5 && b.high > 0.5);
        assert!(b.high - b.low < (a.high - a.low) / 5.0);
        // Normal approximation for n = 1000, p = 0.5: ±1.96·0.0158 = ±0.031.
        assert!((b.high - b.low - 0.062).abs() < 0.01, "{b:?}");
        assert_eq!(bootstrap_mean(&[0.3], 0.95, 100, 1).low, 0.3);
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.5), 2.5);
        assert!((quantile(&s, 0.025) - 1.075).abs() < 1e-12);
    }
}
