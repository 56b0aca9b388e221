//! Intervals for a pass rate (k successes in n trials) that stay honest at small n: 0 of 8
//! is [0, 0.369] (Clopper–Pearson), not the bootstrap's [0, 0].

use statrs::distribution::{Beta, ContinuousCDF};

use super::normal;

/// A proportion with its interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Proportion {
    /// Successes.
    pub k: usize,
    /// Trials.
    pub n: usize,
    /// k / n (NaN when n = 0).
    pub rate: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Wilson's score interval (`statsmodels.stats.proportion.proportion_confint(method="wilson")`).
pub fn wilson(k: usize, n: usize, level: f64) -> Proportion {
    if n == 0 {
        return empty(k, n);
    }
    let (z, nf) = (normal::two_sided(level), n as f64);
    let p = k as f64 / nf;
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Proportion { k, n, rate: p, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
}

/// The exact Clopper–Pearson interval (`proportion_confint(method="beta")`).
pub fn clopper_pearson(k: usize, n: usize, level: f64) -> Proportion {
    if n == 0 {
        return empty(k, n);
    }
    let alpha = 1.0 - level;
    let (kf, nf) = (k as f64, n as f64);
    let beta_quantile = |p: f64, a: f64, b: f64| Beta::new(a, b).map(|d| d.inverse_cdf(p)).unwrap_or(f64::NAN);
    let low = if k == 0 { 0.0 } else { beta_quantile(alpha / 2.0, kf, nf - kf + 1.0) };
    let high = if k == n { 1.0 } else { beta_quantile(1.0 - alpha / 2.0, kf + 1.0, nf - kf) };
    Proportion { k, n, rate: kf / nf, low, high }
}

fn empty(k: usize, n: usize) -> Proportion {
    Proportion { k, n, rate: f64::NAN, low: f64::NAN, high: f64::NAN }
}
