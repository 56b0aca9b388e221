//! The comparison report: stored runs (no re-running) compared with a baseline, as one
//! self-contained HTML file ([`html`]), as JSON (the same data) or as Markdown (for pull
//! requests, [`markdown`]).

pub mod html;
pub mod markdown;

use serde::Serialize;

use super::{compare, CompareOptions, Comparison, RunInfo, RunTable};
use crate::error::{Error, Result};
use crate::run::store::{TRAINER_LOG_FILE, TRAINER_STATE_FILE};

/// The report's version (the JSON's `schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// One case across every run (`None` where a run lacks it).
#[derive(Debug, Clone, Serialize)]
pub struct ReportCase {
    /// Case id.
    pub id: String,
    /// Category.
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Prompt.
    pub prompt: String,
    /// Reference answer.
    pub reference: String,
    /// Per run: output.
    pub outputs: Vec<Option<String>>,
    /// Per run: case score (null when it errored or is missing).
    pub scores: Vec<Option<f64>>,
    /// Per run: passed every check.
    pub passed: Vec<Option<bool>>,
    /// Per run: its checks.
    pub checks: Vec<Vec<CheckCell>>,
}

/// One check of one case in one run, as the per-case view reads it: (name, value or null
/// when errored, passed, errored, detail), an array to keep large reports small.
pub type CheckCell = (String, Option<f64>, bool, bool, String);

/// A training run's loss curve, when the run's adapter directory holds its log.
#[derive(Debug, Clone, Serialize)]
pub struct LossCurve {
    /// Run name.
    pub run: String,
    /// (step, loss, learning rate) per logged step.
    pub points: Vec<(usize, f64, f64)>,
    /// The chart as inline SVG (drawn from the numbers above only).
    pub svg: String,
    /// Why the log found could not be read (then there are no points and no chart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Everything a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version.
    pub schema_version: u32,
    /// The runs, baseline first.
    pub runs: Vec<RunInfo>,
    /// Each other run compared with the baseline.
    pub comparisons: Vec<Comparison>,
    /// Cases, in the baseline's order, then cases only other runs have.
    pub cases: Vec<ReportCase>,
    /// Loss curves of adapters whose training log was found.
    pub loss_curves: Vec<LossCurve>,
    /// Results of blind review studies attached with `eval report --review` (their text
    /// is in the runs' names and the reviewers' names only).
    pub reviews: Vec<crate::review::ReviewResults>,
}

/// Builds the report for `runs`, comparing each with `runs[baseline]`.
pub fn build(runs: &[RunTable], baseline: usize, opts: &CompareOptions) -> Result<Report> {
    if runs.len() < 2 {
        return Err(Error::Invalid("a report compares at least two runs".into()));
    }
    if baseline >= runs.len() {
        return Err(Error::Invalid("the baseline is not among the runs".into()));
    }
    let mut ordered: Vec<&RunTable> = vec![&runs[baseline]];
    ordered.extend(runs.iter().enumerate().filter(|(i, _)| *i != baseline).map(|(_, r)| r));
    let comparisons = ordered[1..].iter().map(|c| compare(ordered[0], c, opts)).collect();
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        runs: ordered.iter().map(|r| RunInfo::of(r)).collect(),
        comparisons,
        cases: aligned_cases(&ordered),
        loss_curves: ordered.iter().filter_map(|r| loss_curve(r)).collect(),
        reviews: Vec::new(),
    })
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }
}

fn aligned_cases(runs: &[&RunTable]) -> Vec<ReportCase> {
    let mut index: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    let mut cases: Vec<ReportCase> = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for c in &run.cases {
            let at = *index.entry((c.category.clone(), c.case_id.clone())).or_insert_with(|| {
                cases.push(ReportCase {
                    id: c.case_id.clone(),
                    category: c.category.clone(),
                    tags: c.tags.clone(),
                    prompt: c.prompt.clone(),
                    reference: c.reference.clone(),
                    outputs: vec![None; runs.len()],
                    scores: vec![None; runs.len()],
                    passed: vec![None; runs.len()],
                    checks: vec![Vec::new(); runs.len()],
                });
                cases.len() - 1
            });
            let case = &mut cases[at];
            case.outputs[r] = Some(c.output.clone());
            case.scores[r] = (!c.score.is_nan()).then_some(c.score);
            case.passed[r] = Some(c.passed);
            case.checks[r] =
                c.checks.iter().map(|k| (k.check.clone(), (!k.value.is_nan()).then_some(k.value), k.passed, k.errored, k.detail.clone())).collect();
        }
    }
    cases
}

/// The training log of a run's adapter: `trainer_log.jsonl` in the run directory (where
/// `eval run` copies it), else in the adapter directory the run names.
fn loss_curve(run: &RunTable) -> Option<LossCurve> {
    let adapter = std::path::PathBuf::from(run.record.backend.adapter.as_ref()?);
    // tunelab's (and LLaMA-Factory's) trainer_log.jsonl, else a transformers Trainer's
    // trainer_state.json; the run directory's copy first (the adapter may have moved).
    let dirs = [run.dir.as_path(), adapter.as_path()];
    let read = match dirs.iter().map(|d| d.join(TRAINER_LOG_FILE)).find(|p| p.is_file()) {
        Some(log) => tunelab::train::TrainerLog::read(&log),
        None => tunelab::train::read_trainer_state(&dirs.iter().map(|d| d.join(TRAINER_STATE_FILE)).find(|p| p.is_file())?),
    };
    let run_name = run.record.name.clone();
    // A log that is there but unreadable is reported, not silently left out of the report.
    let history = match read {
        Ok(history) if history.is_empty() => return None,
        Ok(history) => history,
        Err(e) => return Some(LossCurve { run: run_name, points: Vec::new(), svg: String::new(), problem: Some(e.to_string()) }),
    };
    let points = history.iter().filter_map(|r| r.loss.map(|l| (r.current_steps, l, r.lr))).collect();
    let svg = tunelab::train::loss_chart(&history).to_svg(520.0, 220.0);
    Some(LossCurve { run: run_name, points, svg, problem: None })
}
