//! Bradley–Terry strengths from pairwise comparisons, with bootstrap intervals and ranks
//! that account for overlapping intervals (as Chatbot Arena reports them).
//!
//! The model: system `i` is preferred to `j` with probability `pᵢ / (pᵢ + pⱼ)`. A tie counts
//! half a win for each side. Strengths are fitted by Hunter's (2004) minorization–
//! maximization iteration and reported on the Elo-like scale `1000 + 400·log₁₀ pᵢ` with the
//! geometric mean of the strengths at 1000. Every pair of systems also gets a hundredth of
//! a virtual tie, so a system that lost every comparison gets a finite, very low rating
//! instead of minus infinity (the maximum-likelihood estimate does not exist there).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::quantile;

/// Virtual ties added between every pair of systems (see the module comment).
const PRIOR_TIES: f64 = 0.01;

/// One comparison: `first` against `second`, `score` = 1 when `first` was preferred, 0 when
/// `second` was, 0.5 for a tie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Index of one system.
    pub first: usize,
    /// Index of the other.
    pub second: usize,
    /// `first`'s score in this comparison.
    pub score: f64,
}

/// A system's fitted strength.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rating {
    /// `1000 + 400·log₁₀ p` (geometric mean of the systems at 1000).
    pub rating: f64,
    /// Lower bound of the bootstrap interval.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// 1 + the number of systems whose interval lies entirely above this one's.
    pub rank: usize,
}

/// Maximum-likelihood strengths of `systems` systems, as ratings (no intervals).
pub fn fit(systems: usize, comparisons: &[Comparison]) -> Vec<f64> {
    let mut wins = vec![vec![0f64; systems]; systems];
    let mut games = vec![vec![0f64; systems]; systems];
    for c in comparisons {
        assert!(c.first < systems && c.second < systems && c.first != c.second, "comparison {c:?} outside {systems} systems");
        wins[c.first][c.second] += c.score;
        wins[c.second][c.first] += 1.0 - c.score;
        games[c.first][c.second] += 1.0;
        games[c.second][c.first] += 1.0;
    }
    for i in 0..systems {
        for j in 0..systems {
            if i != j {
                wins[i][j] += PRIOR_TIES / 2.0;
                games[i][j] += PRIOR_TIES;
            }
        }
    }
    let total_wins: Vec<f64> = wins.iter().map(|row| row.iter().sum()).collect();
    let mut p = vec![1f64; systems];
    for _ in 0..100_000 {
        let mut next: Vec<f64> = (0..systems)
            .map(|i| {
                let denom: f64 = (0..systems).filter(|&j| j != i).map(|j| games[i][j] / (p[i] + p[j])).sum();
                total_wins[i] / denom
            })
            .collect();
        let log_mean = next.iter().map(|v| v.ln()).sum::<f64>() / systems as f64;
        next.iter_mut().for_each(|v| *v /= log_mean.exp());
        let change = next.iter().zip(&p).map(|(a, b)| (a.ln() - b.ln()).abs()).fold(0.0, f64::max);
        p = next;
        if change < 1e-12 {
            break;
        }
    }
    p.iter().map(|v| 1000.0 + 400.0 * v.log10()).collect()
}

/// [`fit`] with percentile-bootstrap intervals at `level` (comparisons resampled with
/// replacement, seeded) and overlap-aware ranks.
pub fn fit_with_intervals(systems: usize, comparisons: &[Comparison], level: f64, resamples: usize, seed: u64) -> Vec<Rating> {
    let point = fit(systems, comparisons);
    let mut samples = vec![Vec::with_capacity(resamples); systems];
    if !comparisons.is_empty() {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = comparisons.len();
        for _ in 0..resamples {
            let resampled: Vec<Comparison> = (0..n).map(|_| comparisons[rng.random_range(0..n)]).collect();
            for (s, r) in samples.iter_mut().zip(fit(systems, &resampled)) {
                s.push(r);
            }
        }
    }
    let alpha = (1.0 - level) / 2.0;
    let bounds: Vec<(f64, f64)> = samples
        .iter_mut()
        .zip(&point)
        .map(|(s, &p)| {
            if s.is_empty() {
                return (p, p);
            }
            s.sort_by(f64::total_cmp);
            (quantile(s, alpha), quantile(s, 1.0 - alpha))
        })
        .collect();
    (0..systems)
        .map(|i| {
            let above = (0..systems).filter(|&j| j != i && bounds[j].0 > bounds[i].1).count();
            Rating { rating: point[i], low: bounds[i].0, high: bounds[i].1, rank: 1 + above }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeat(first: usize, second: usize, score: f64, times: usize) -> impl Iterator<Item = Comparison> {
        std::iter::repeat_n(Comparison { first, second, score }, times)
    }

    #[test]
    fn two_systems_recover_the_odds_of_their_record() {
        // 30 wins to 10: p_a / p_b = 3, a rating gap of 400·log10(3).
        let c: Vec<_> = repeat(0, 1, 1.0, 30).chain(repeat(0, 1, 0.0, 10)).collect();
        let r = fit(2, &c);
        let gap = r[0] - r[1];
        // The hundredth of a virtual tie moves the odds to 30.005 / 10.005 (0.07 points).
        assert!((gap - 400.0 * 3f64.log10()).abs() < 0.1, "{gap}");
        assert!(((r[0] + r[1]) / 2.0 - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn ties_count_half_and_the_fit_solves_the_likelihood_equations() {
        // Three systems, an uneven schedule with ties: at the fit, each system's expected
        // score equals its observed score (the maximum-likelihood condition).
        let c: Vec<_> = repeat(0, 1, 1.0, 12)
            .chain(repeat(0, 1, 0.5, 4))
            .chain(repeat(1, 0, 1.0, 5))
            .chain(repeat(1, 2, 1.0, 9))
            .chain(repeat(2, 1, 1.0, 6))
            .chain(repeat(0, 2, 0.0, 3))
            .chain(repeat(0, 2, 1.0, 7))
            .collect();
        let r = fit(3, &c);
        let p: Vec<f64> = r.iter().map(|v| 10f64.powf((v - 1000.0) / 400.0)).collect();
        for i in 0..3 {
            let (mut observed, mut expected) = (0.0, 0.0);
            for x in &c {
                let (me, other, s) = if x.first == i {
                    (i, x.second, x.score)
                } else if x.second == i {
                    (i, x.first, 1.0 - x.score)
                } else {
                    continue;
                };
                observed += s;
                expected += p[me] / (p[me] + p[other]);
            }
            // The virtual ties move the solution by far less than this.
            assert!((observed - expected).abs() < 0.02, "system {i}: observed {observed}, expected {expected}");
        }
    }

    #[test]
    fn a_system_that_never_won_gets_a_finite_low_rating_and_ranks_last() {
        let c: Vec<_> = repeat(0, 1, 1.0, 20).chain(repeat(2, 1, 1.0, 20)).chain(repeat(0, 2, 0.5, 20)).collect();
        let r = fit_with_intervals(3, &c, 0.95, 200, 7);
        assert!(r[1].rating.is_finite() && r[1].rating < r[0].rating - 400.0, "{r:?}");
        assert_eq!(r[1].rank, 3);
        assert_eq!((r[0].rank, r[2].rank), (1, 1), "overlapping intervals share a rank: {r:?}");
        assert!(r.iter().all(|x| x.low <= x.rating && x.rating <= x.high), "{r:?}");
    }
}
