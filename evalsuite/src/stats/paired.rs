//! Two runs scored on the same cases: the mean difference (candidate − baseline) with its
//! standard error, the CLT and paired-bootstrap intervals, the correlation of the two
//! runs' scores, an optional clustered standard error (cases grouped by a field, as in
//! Miller 2024, "Adding Error Bars to Evals"), and the smallest effect the comparison could
//! detect.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{normal, quantile};

/// Power at which [`PairedDifference::detectable_effect`] is computed.
pub const POWER: f64 = 0.8;

/// The comparison of paired scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PairedDifference {
    /// Cases compared.
    pub n: usize,
    /// Baseline mean.
    pub baseline: f64,
    /// Candidate mean.
    pub candidate: f64,
    /// Mean of candidate − baseline.
    pub diff: f64,
    /// Standard error of the mean difference (sample standard deviation / √n).
    pub se: f64,
    /// Normal-theory interval: diff ± z·se.
    pub clt: (f64, f64),
    /// Percentile interval of the mean difference over resampled cases (pairs kept).
    pub bootstrap: (f64, f64),
    /// Pearson correlation of the two runs' per-case scores (NaN when either is constant).
    pub correlation: f64,
    /// Cluster-robust standard error, when cases were grouped.
    pub clustered_se: Option<f64>,
    /// Number of clusters, when cases were grouped.
    pub clusters: Option<usize>,
    /// The smallest true difference this n and spread would detect at [`POWER`] with a
    /// two-sided test at the interval's level: (z₁₋α/₂ + z_power)·se.
    pub detectable_effect: f64,
}

/// Settings of a paired comparison.
#[derive(Debug, Clone, Copy)]
pub struct PairedOptions {
    /// Confidence level of the intervals (0.95).
    pub level: f64,
    /// Bootstrap resamples (≥ 2000).
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

impl Default for PairedOptions {
    fn default() -> Self {
        Self { level: 0.95, resamples: super::BOOTSTRAP_RESAMPLES, seed: 0 }
    }
}

/// Compares `candidate` with `baseline`, case by case (equal lengths; `clusters`, when
/// given, names each case's group).
pub fn paired_difference(baseline: &[f64], candidate: &[f64], clusters: Option<&[String]>, opts: &PairedOptions) -> PairedDifference {
    assert_eq!(baseline.len(), candidate.len(), "paired scores");
    let n = baseline.len();
    let d: Vec<f64> = candidate.iter().zip(baseline).map(|(c, b)| c - b).collect();
    let nf = n as f64;
    let (mean_b, mean_c, diff) = (mean(baseline), mean(candidate), mean(&d));
    let se = if n > 1 { (d.iter().map(|x| (x - diff).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt() / nf.sqrt() } else { f64::NAN };
    let z = normal::two_sided(opts.level);
    let clustered = clusters.map(|c| clustered_se(&d, c));
    PairedDifference {
        n,
        baseline: mean_b,
        candidate: mean_c,
        diff,
        se,
        clt: (diff - z * se, diff + z * se),
        bootstrap: bootstrap_interval(&d, opts),
        correlation: pearson(baseline, candidate),
        clustered_se: clustered.map(|(se, _)| se),
        clusters: clustered.map(|(_, g)| g),
        detectable_effect: (z + normal::quantile(POWER)) * clustered.map_or(se, |(se, _)| se),
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Percentile interval of the mean of `d` over case resamples.
fn bootstrap_interval(d: &[f64], opts: &PairedOptions) -> (f64, f64) {
    let n = d.len();
    if n < 2 {
        let m = mean(d);
        return (m, m);
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut means: Vec<f64> = (0..opts.resamples.max(1)).map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - opts.level) / 2.0;
    (quantile(&means, alpha), quantile(&means, 1.0 - alpha))
}

/// Pearson's r (`scipy.stats.pearsonr`); NaN when either side has no spread.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}

/// The cluster-robust (CR0) standard error of the mean of `d`: √(Σ_g (Σ_{i∈g} (dᵢ − d̄))²) / n,
/// equal to statsmodels' OLS on a constant with `cov_type="cluster"` and
/// `use_correction=False`. Returns it with the number of clusters.
pub fn clustered_se(d: &[f64], clusters: &[String]) -> (f64, usize) {
    let m = mean(d);
    let mut sums: HashMap<&str, f64> = HashMap::new();
    for (x, g) in d.iter().zip(clusters) {
        *sums.entry(g.as_str()).or_default() += x - m;
    }
    let se = sums.values().map(|s| s * s).sum::<f64>().sqrt() / d.len() as f64;
    (se, sums.len())
}
