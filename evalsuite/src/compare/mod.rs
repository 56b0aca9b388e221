//! Did the adapter get better? Two stored runs compared case by case (joined by category
//! and case id): per category and per check, the paired mean difference with its intervals,
//! pass rates with Wilson intervals, the flip table, McNemar's exact test with Holm's
//! correction across categories, the smallest detectable effect, a verdict, the
//! memorization gap and forgetting, and sanity flags. [`gate`] turns a comparison into a
//! pass/fail decision; [`report`] renders it as HTML, JSON or Markdown.

pub mod flags;
pub mod gate;
pub mod junit;
pub mod report;
pub mod table;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

pub use flags::{Flag, FlagKind};
pub use table::{CaseRow, CheckRow, RunTable};

use crate::stats::hypothesis::{holm, mcnemar_exact};
use crate::stats::paired::{paired_difference, PairedDifference, PairedOptions};
use crate::stats::proportion::{wilson, Proportion};

/// Fewest paired cases a verdict is given on: below it a percentile bootstrap spans only the
/// few values there are and would claim a precision it does not have.
pub const MIN_CASES_FOR_VERDICT: usize = 5;

/// Categories where a drop means the model got worse outside its task.
pub const FORGETTING_CATEGORIES: [&str; 2] = ["guard", "ood"];

/// How cases are grouped for clustered standard errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterBy {
    /// Independent cases (no clustering).
    None,
    /// A case's first tag (cases without tags are their own cluster).
    FirstTag,
}

/// Settings of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// Interval level, bootstrap resamples and seed.
    pub paired: PairedOptions,
    /// Clustering of cases.
    pub cluster_by: ClusterBy,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self { paired: PairedOptions { level: 0.95, resamples: 4000, seed: 0x7e57 }, cluster_by: ClusterBy::None }
    }
}

/// Pass → fail and fail → pass counts between two runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flips {
    /// Passed in the baseline, fails in the candidate.
    pub pass_to_fail: usize,
    /// Failed in the baseline, passes in the candidate.
    pub fail_to_pass: usize,
    /// Passes in both.
    pub both_pass: usize,
    /// Fails in both.
    pub both_fail: usize,
}

impl Flips {
    /// Counts (baseline passed, candidate passed) pairs.
    fn count(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut flips = Self::default();
        for pair in pairs {
            match pair {
                (true, false) => flips.pass_to_fail += 1,
                (false, true) => flips.fail_to_pass += 1,
                (true, true) => flips.both_pass += 1,
                (false, false) => flips.both_fail += 1,
            }
        }
        flips
    }

    /// Cases counted.
    pub fn total(&self) -> usize {
        self.pass_to_fail + self.fail_to_pass + self.both_pass + self.both_fail
    }

    /// The baseline's and the candidate's pass rates with Wilson intervals at `level`.
    pub fn pass_rates(&self, level: f64) -> (Proportion, Proportion) {
        let n = self.total();
        (wilson(self.both_pass + self.pass_to_fail, n, level), wilson(self.both_pass + self.fail_to_pass, n, level))
    }

    /// McNemar's exact p-value on the discordant pairs.
    pub fn mcnemar_p(&self) -> f64 {
        mcnemar_exact(self.pass_to_fail, self.fail_to_pass)
    }
}

/// What the interval says about a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval of the difference is above 0.
    Better,
    /// The whole interval is below 0.
    Worse,
    /// The interval contains 0.
    NoEvidence,
}

impl Verdict {
    /// From an interval of candidate − baseline.
    pub fn of(interval: (f64, f64)) -> Self {
        if interval.0 > 0.0 {
            Verdict::Better
        } else if interval.1 < 0.0 {
            Verdict::Worse
        } else {
            Verdict::NoEvidence
        }
    }

    /// `better`, `worse` or `no evidence`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoEvidence => "no evidence",
        }
    }
}

/// One check within a category.
#[derive(Debug, Clone, Serialize)]
pub struct CheckComparison {
    /// Check name.
    pub check: String,
    /// Cases where neither side errored.
    pub n: usize,
    /// Raw values, candidate − baseline.
    pub value: PairedDifference,
    /// Baseline pass rate.
    pub baseline_pass: Proportion,
    /// Candidate pass rate.
    pub candidate_pass: Proportion,
    /// Pass/fail flips.
    pub flips: Flips,
    /// McNemar's exact p-value on the flips.
    pub mcnemar_p: f64,
}

/// One category.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryComparison {
    /// Category name.
    pub category: String,
    /// Cases in both runs with a score on both sides.
    pub n: usize,
    /// Cases left out because a side has no score (every check errored).
    pub unscored: usize,
    /// Case scores, candidate − baseline.
    pub score: PairedDifference,
    /// Baseline share of cases passing every check.
    pub baseline_pass: Proportion,
    /// Candidate share.
    pub candidate_pass: Proportion,
    /// Case pass/fail flips.
    pub flips: Flips,
    /// McNemar's exact p-value on the case flips.
    pub mcnemar_p: f64,
    /// The same, Holm-adjusted across the comparison's categories.
    pub mcnemar_p_holm: f64,
    /// From the score's bootstrap interval.
    pub verdict: Verdict,
    /// Per check.
    pub checks: Vec<CheckComparison>,
}

/// What the report shows about a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Run name.
    pub name: String,
    /// Model (+ adapter).
    pub evaluated: String,
    /// Start time.
    pub started_at: String,
    /// Suite name and hash.
    pub suite: (String, String),
    /// Temperature of decoding.
    pub temperature: f64,
    /// Adapter directory, when one was evaluated.
    pub adapter: Option<String>,
}

impl RunInfo {
    fn of(t: &RunTable) -> Self {
        let r = &t.record;
        Self {
            name: r.name.clone(),
            evaluated: r.evaluated(),
            started_at: r.started_at.clone(),
            suite: (r.suite.name.clone(), r.suite.sha256.clone()),
            temperature: r.decoding.temperature,
            adapter: r.backend.adapter.clone(),
        }
    }
}

/// Two runs compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The reference run.
    pub baseline: RunInfo,
    /// The run being judged.
    pub candidate: RunInfo,
    /// Interval level.
    pub level: f64,
    /// Clustering used.
    pub cluster_by: ClusterBy,
    /// Per category, in the baseline's order.
    pub categories: Vec<CategoryComparison>,
    /// Mean score of `seen` minus `heldout`, per run (baseline, candidate), where both exist.
    pub memorization_gap: (Option<f64>, Option<f64>),
    /// Cases in both runs.
    pub shared_cases: usize,
    /// Shared cases whose output is the same text in both runs.
    pub identical_outputs: usize,
    /// Cases per category in each run, `(baseline, candidate)`, shared or not, for every
    /// category of either run.
    pub run_cases: BTreeMap<String, (usize, usize)>,
    /// Problems with comparing these runs at all.
    pub flags: Vec<Flag>,
}

impl Comparison {
    /// A category by name.
    pub fn category(&self, name: &str) -> Option<&CategoryComparison> {
        self.categories.iter().find(|c| c.category == name)
    }

    /// Candidate − baseline on the guard and out-of-domain categories present.
    pub fn forgetting(&self) -> Vec<(&str, &PairedDifference)> {
        self.categories.iter().filter(|c| FORGETTING_CATEGORIES.contains(&c.category.as_str())).map(|c| (c.category.as_str(), &c.score)).collect()
    }
}

/// Compares `candidate` with `baseline`.
pub fn compare(baseline: &RunTable, candidate: &RunTable, opts: &CompareOptions) -> Comparison {
    let by_key: HashMap<(&str, &str), &CaseRow> = candidate.cases.iter().map(|c| ((c.category.as_str(), c.case_id.as_str()), c)).collect();
    let pairs: Vec<(&CaseRow, &CaseRow)> =
        baseline.cases.iter().filter_map(|b| by_key.get(&(b.category.as_str(), b.case_id.as_str())).map(|c| (b, *c))).collect();
    let identical = pairs.iter().filter(|(b, c)| b.output == c.output).count();
    let mut categories: Vec<CategoryComparison> = baseline
        .categories()
        .into_iter()
        .enumerate()
        .filter_map(|(k, name)| {
            let in_cat: Vec<(&CaseRow, &CaseRow)> = pairs.iter().filter(|(b, _)| b.category == name).copied().collect();
            (!in_cat.is_empty()).then(|| compare_category(name, &in_cat, opts, k as u64))
        })
        .collect();
    let adjusted = holm(&categories.iter().map(|c| c.mcnemar_p).collect::<Vec<_>>());
    for (c, p) in categories.iter_mut().zip(adjusted) {
        c.mcnemar_p_holm = p;
    }
    let flags = flags::find(baseline, candidate, pairs.len(), identical);
    let mut run_cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in &baseline.cases {
        run_cases.entry(c.category.clone()).or_default().0 += 1;
    }
    for c in &candidate.cases {
        run_cases.entry(c.category.clone()).or_default().1 += 1;
    }
    Comparison {
        baseline: RunInfo::of(baseline),
        candidate: RunInfo::of(candidate),
        level: opts.paired.level,
        cluster_by: opts.cluster_by,
        categories,
        memorization_gap: (memorization_gap(baseline), memorization_gap(candidate)),
        shared_cases: pairs.len(),
        identical_outputs: identical,
        run_cases,
        flags,
    }
}

fn compare_category(category: String, pairs: &[(&CaseRow, &CaseRow)], opts: &CompareOptions, k: u64) -> CategoryComparison {
    let scored: Vec<&(&CaseRow, &CaseRow)> = pairs.iter().filter(|(b, c)| !b.score.is_nan() && !c.score.is_nan()).collect();
    let cluster = |b: &CaseRow| match opts.cluster_by {
        ClusterBy::FirstTag => b.tags.first().cloned().unwrap_or_else(|| format!("case:{}", b.case_id)),
        ClusterBy::None => String::new(),
    };
    let clusters: Vec<String> = scored.iter().map(|(b, _)| cluster(b)).collect();
    let clusters = (opts.cluster_by != ClusterBy::None).then_some(clusters.as_slice());
    let seeded = PairedOptions { seed: opts.paired.seed.wrapping_add(k * 1000), ..opts.paired };
    let score = paired_difference(
        &scored.iter().map(|(b, _)| b.score).collect::<Vec<_>>(),
        &scored.iter().map(|(_, c)| c.score).collect::<Vec<_>>(),
        clusters,
        &seeded,
    );
    let flips = Flips::count(pairs.iter().map(|(b, c)| (b.passed, c.passed)));
    let (baseline_pass, candidate_pass) = flips.pass_rates(opts.paired.level);
    CategoryComparison {
        category,
        n: scored.len(),
        unscored: pairs.len() - scored.len(),
        verdict: if score.n < MIN_CASES_FOR_VERDICT { Verdict::NoEvidence } else { Verdict::of(score.bootstrap) },
        score,
        baseline_pass,
        candidate_pass,
        mcnemar_p: flips.mcnemar_p(),
        mcnemar_p_holm: f64::NAN,
        flips,
        checks: compare_checks(pairs, &seeded),
    }
}

fn compare_checks<'a>(pairs: &[(&'a CaseRow, &'a CaseRow)], opts: &PairedOptions) -> Vec<CheckComparison> {
    let mut names: Vec<&str> = Vec::new();
    for (b, _) in pairs {
        for ch in &b.checks {
            if !names.contains(&ch.check.as_str()) {
                names.push(&ch.check);
            }
        }
    }
    names
        .into_iter()
        .enumerate()
        .map(|(j, name)| {
            let find = |row: &'a CaseRow| row.checks.iter().find(|c| c.check == name).filter(|c| !c.errored);
            let both: Vec<(&CheckRow, &CheckRow)> = pairs.iter().filter_map(|(b, c)| Some((find(b)?, find(c)?))).collect();
            let flips = Flips::count(both.iter().map(|(b, c)| (b.passed, c.passed)));
            let (baseline_pass, candidate_pass) = flips.pass_rates(opts.level);
            let seeded = PairedOptions { seed: opts.seed.wrapping_add(j as u64 + 1), ..*opts };
            let value = paired_difference(
                &both.iter().map(|(b, _)| b.value).collect::<Vec<_>>(),
                &both.iter().map(|(_, c)| c.value).collect::<Vec<_>>(),
                None,
                &seeded,
            );
            CheckComparison { check: name.to_string(), n: both.len(), value, baseline_pass, candidate_pass, mcnemar_p: flips.mcnemar_p(), flips }
        })
        .collect()
}

/// Mean score of `seen` cases minus `heldout` cases in one run.
pub fn memorization_gap(run: &RunTable) -> Option<f64> {
    let mean = |cat: &str| {
        let v: Vec<f64> = run.cases.iter().filter(|c| c.category == cat && !c.score.is_nan()).map(|c| c.score).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Some(mean("seen")? - mean("heldout")?)
}
