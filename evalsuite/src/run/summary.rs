//! `eval summary`: per-category case scores with 95 % bootstrap intervals, pass rates with
//! Wilson intervals (honest at small n: 0 of 8 is [0, 0.32], not [0, 0]), and per-check
//! means, aggregated with polars from a run's `results.parquet`. Checks that errored (no
//! value) are left out of every mean and counted.

use std::fmt::Write as _;
use std::path::Path;

use polars::prelude::{col, lit, DataFrame, DataType, IntoLazy, PolarsResult};
use serde::Serialize;

use super::store;
use crate::error::{Error, Result};
use crate::stats::proportion::wilson;
use crate::stats::{bootstrap_mean, Estimate, BOOTSTRAP_RESAMPLES};

/// Confidence level of the intervals.
pub const LEVEL: f64 = 0.95;

/// One check's aggregate within a category.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    /// Check name.
    pub check: String,
    /// Mean raw value over the cases where it did not error.
    pub mean_value: f64,
    /// Share of those cases passing.
    pub pass_rate: f64,
    /// Cases where the check errored.
    pub errored: usize,
}

/// One category's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CategorySummary {
    /// Category name.
    pub category: String,
    /// Cases in the category.
    pub cases: usize,
    /// Checks that errored, over all its cases.
    pub errored_checks: usize,
    /// Mean case score (weighted rubric score) with its interval, over cases with a score.
    pub score: Estimate,
    /// Share of cases passing every check, with its Wilson interval.
    pub pass_rate: Estimate,
    /// Per-check aggregates.
    pub checks: Vec<CheckSummary>,
}

/// A run's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Run name.
    pub run: String,
    /// What was evaluated (backend model + adapter).
    pub evaluated: String,
    /// Per category, in suite order.
    pub categories: Vec<CategorySummary>,
}

/// A string column of a results table (missing values as empty strings).
pub(crate) fn strings(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    Ok(df.column(name)?.str()?.iter().map(|s| s.unwrap_or("").to_string()).collect())
}

/// A boolean column of a results table (missing values as false); `error`, absent in runs
/// written before errors were recorded, reads as all false.
pub(crate) fn bools(df: &DataFrame, name: &str) -> PolarsResult<Vec<bool>> {
    match df.column(name) {
        Ok(c) => Ok(c.bool()?.iter().map(|x| x.unwrap_or(false)).collect()),
        Err(_) if name == "error" => Ok(vec![false; df.height()]),
        Err(e) => Err(e),
    }
}

/// A numeric column of a results table as `f64` (missing values as NaN).
pub(crate) fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<f64>> {
    Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// Summarizes the run directory `dir`.
pub fn summarize(dir: &Path) -> Result<Summary> {
    let (record, df) = store::read_run(dir)?;
    let table = |source| Error::Table { path: dir.join(store::RESULTS_FILE), source };
    summarize_frame(record, df).map_err(table)
}

fn summarize_frame(record: super::record::RunRecord, mut df: DataFrame) -> PolarsResult<Summary> {
    if df.column("error").is_err() {
        // Runs written before errors were recorded: a check never errored there.
        df = df.lazy().with_column(lit(false).alias("error")).collect()?;
    }
    let ok = || col("error").not();
    let per_case =
        df.clone().lazy().group_by_stable([col("category"), col("case_id")]).agg([col("case_score").first(), col("case_passed").first()]).collect()?;
    let per_check = df
        .lazy()
        .group_by_stable([col("category"), col("check")])
        .agg([
            col("value").filter(ok()).mean().alias("mean_value"),
            col("passed").filter(ok()).cast(DataType::Float64).mean().alias("pass_rate"),
            col("error").cast(DataType::Float64).sum().alias("errored"),
        ])
        .collect()?;
    let (case_cat, case_score, case_pass) = (strings(&per_case, "category")?, floats(&per_case, "case_score")?, floats(&per_case, "case_passed")?);
    let (check_cat, check_name, check_mean, check_pass, check_errored) = (
        strings(&per_check, "category")?,
        strings(&per_check, "check")?,
        floats(&per_check, "mean_value")?,
        floats(&per_check, "pass_rate")?,
        floats(&per_check, "errored")?,
    );
    let mut order: Vec<String> = Vec::new();
    for c in &case_cat {
        if !order.contains(c) {
            order.push(c.clone());
        }
    }
    let categories = order
        .into_iter()
        .enumerate()
        .map(|(k, category)| {
            let pick = |v: &[f64]| case_cat.iter().zip(v).filter(|(c, _)| **c == category).map(|(_, x)| *x).collect::<Vec<f64>>();
            let seed = 0x5eed + k as u64;
            let checks: Vec<CheckSummary> = (0..check_cat.len())
                .filter(|&i| check_cat[i] == category)
                .map(|i| CheckSummary { check: check_name[i].clone(), mean_value: check_mean[i], pass_rate: check_pass[i], errored: check_errored[i] as usize })
                .collect();
            let scores: Vec<f64> = pick(&case_score).into_iter().filter(|x| !x.is_nan()).collect();
            CategorySummary {
                cases: case_cat.iter().filter(|c| **c == category).count(),
                errored_checks: checks.iter().map(|c| c.errored).sum(),
                score: bootstrap_mean(&scores, LEVEL, BOOTSTRAP_RESAMPLES, seed),
                pass_rate: pass_rate(&pick(&case_pass)),
                category,
                checks,
            }
        })
        .collect();
    Ok(Summary { evaluated: record.evaluated(), run: record.name, categories })
}

/// The share of 1.0s among 0/1 values, with Wilson's interval.
fn pass_rate(passed: &[f64]) -> Estimate {
    let k = passed.iter().filter(|&&x| x == 1.0).count();
    let p = wilson(k, passed.len(), LEVEL);
    Estimate { mean: p.rate, low: p.low, high: p.high, n: p.n }
}

/// The summary as an aligned text table.
pub fn render_text(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "run {} — {}", s.run, s.evaluated);
    let _ = writeln!(out, "{:<10} {:>5}  {:<24} {:<24}", "category", "cases", "score [95% CI]", "pass rate [95% CI]");
    for c in &s.categories {
        let ci = |e: &Estimate| format!("{:.3} [{:.3}, {:.3}]", e.mean, e.low, e.high);
        let errored = if c.errored_checks > 0 { format!("  {} check(s) errored", c.errored_checks) } else { String::new() };
        let _ = writeln!(out, "{:<10} {:>5}  {:<24} {:<24}{errored}", c.category, c.cases, ci(&c.score), ci(&c.pass_rate));
    }
    let _ = writeln!(out, "\nper check (mean value, pass rate):");
    for c in &s.categories {
        let checks: Vec<String> = c
            .checks
            .iter()
            .map(|k| {
                let errored = if k.errored > 0 { format!(", {} errored", k.errored) } else { String::new() };
                format!("{} {:.3} ({:.0}%{errored})", k.check, k.mean_value, 100.0 * k.pass_rate)
            })
            .collect();
        let _ = writeln!(out, "  {:<10} {}", c.category, checks.join(" · "));
    }
    out
}
