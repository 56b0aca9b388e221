//! The standard normal distribution: quantiles for intervals and power.

use statrs::distribution::{ContinuousCDF, Normal};

fn standard() -> Normal {
    Normal::new(0.0, 1.0).expect("the standard normal is valid")
}

/// The `p` quantile of the standard normal (`scipy.stats.norm.ppf`).
pub fn quantile(p: f64) -> f64 {
    standard().inverse_cdf(p)
}

/// The standard normal's CDF at `x` (`scipy.stats.norm.cdf`).
pub fn cdf(x: f64) -> f64 {
    standard().cdf(x)
}

/// The two-sided critical value for confidence `level` (1.959964… at 0.95).
pub fn two_sided(level: f64) -> f64 {
    quantile(0.5 + level / 2.0)
}
