//! Tests across a comparison: McNemar's exact test on pass/fail flips, and Holm's
//! step-down correction when several categories are tested at once.

use statrs::distribution::{Binomial, DiscreteCDF};

/// McNemar's exact two-sided p-value for `b` cases that went pass → fail and `c` that went
/// fail → pass (`statsmodels.stats.contingency_tables.mcnemar(exact=True)`): the binomial
/// test of min(b, c) in b + c trials at one half. 1 when nothing flipped.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let binomial = Binomial::new(0.5, n as u64).expect("p = 0.5 is valid");
    (2.0 * binomial.cdf(b.min(c) as u64)).min(1.0)
}

/// Holm-adjusted p-values, in the input order (`statsmodels.stats.multitest.multipletests(
/// method="holm")`). NaN p-values stay NaN and do not count as tests.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len()).filter(|&i| !p_values[i].is_nan()).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}
