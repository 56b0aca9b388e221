//! `eval run`: generate (through the cache) for every case of a suite, score each output
//! with its rubric, and write the run directory ([`store`]); [`summary`] reads it back.
//! Progress is reported through [`RunEvent`]s; the caller decides how to show it.

pub mod record;
pub mod score;
pub mod shards;
pub mod store;
pub mod summary;
pub mod validate;

use std::path::PathBuf;
use std::time::Instant;

use tunelab::GenerationConfig;

use crate::backend::{Backend, Generated};
use crate::cache::GenerationCache;
use crate::case::Case;
use crate::error::{Error, Result};
use crate::rubric::{CaseScore, Rubric};
use crate::scorers::{JudgePolicy, ScoreContext};
use crate::suite::{ScoredCase, Suite};

/// Settings of one `eval run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run name (the directory under `out`).
    pub name: String,
    /// Folder that holds run directories.
    pub out: PathBuf,
    /// Decoding settings (greedy by default).
    pub decoding: GenerationConfig,
    /// Generation cache file (default `<out>/.cache/generations.jsonl`).
    pub cache: Option<PathBuf>,
    /// Only these categories (all when empty).
    pub categories: Vec<String>,
    /// At most this many cases per category.
    pub limit_per_category: Option<usize>,
    /// Only this slice of the selected cases (`eval merge` joins the slices' runs).
    pub shard: Option<record::Shard>,
    /// Replace an existing run directory of the same name.
    pub overwrite: bool,
    /// Where LLM judges may send outputs, and the key variable they send.
    pub judges: JudgePolicy,
    /// The command line, for provenance.
    pub command: String,
}

/// What a run reports as it goes (for progress bars and logs).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The generation cache had lines it could not read (a run interrupted mid-write); they
    /// were skipped and those cases are generated again.
    CacheLinesSkipped(usize),
    /// Generation starts for `pending` cases; `cached` came from the cache.
    Generating {
        /// Cases to generate.
        pending: usize,
        /// Cases already cached.
        cached: usize,
    },
    /// One more pending case finished (with an output or an error).
    Generated {
        /// Pending cases finished so far.
        done: usize,
        /// Cases that were pending.
        pending: usize,
    },
    /// Generation is over; scoring starts.
    Scoring {
        /// Cases to score.
        cases: usize,
    },
}

/// Receives a run's [`RunEvent`]s (from the thread the backend reports on).
pub type OnRunEvent<'a> = dyn FnMut(RunEvent) + Send + 'a;

/// One case's output with its scores.
#[derive(Debug, Clone)]
pub struct CaseOutcome<'a> {
    /// The case.
    pub case: &'a Case,
    /// The rubric that scored it.
    pub rubric: &'a Rubric,
    /// The output.
    pub generated: Generated,
    /// Whether the output came from the cache.
    pub cached: bool,
    /// Its scores.
    pub score: CaseScore,
}

/// What `execute` did.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run directory written.
    pub dir: PathBuf,
    /// Cases evaluated.
    pub cases: usize,
    /// Outputs taken from the cache.
    pub cached: usize,
    /// Rows in results.parquet.
    pub rows: usize,
    /// Checks whose scorer could not compute a value (their rows say why).
    pub errored_checks: usize,
    /// Seconds spent generating.
    pub generation_s: f64,
    /// Seconds spent scoring.
    pub scoring_s: f64,
}

/// The cases a run evaluates: category filter, then a per-category limit, then the shard.
pub fn select_cases<'a>(suite: &'a Suite, opts: &RunOptions) -> Vec<ScoredCase<'a>> {
    let mut per_category: std::collections::HashMap<&str, usize> = Default::default();
    suite
        .scored_cases()
        .filter(|c| opts.categories.is_empty() || opts.categories.contains(&c.case.category))
        .filter(|c| {
            let n = per_category.entry(&c.case.category).or_default();
            *n += 1;
            opts.limit_per_category.is_none_or(|l| *n <= l)
        })
        .filter(|c| opts.shard.is_none_or(|s| s.contains(&c.case.category, &c.case.id)))
        .collect()
}

/// Runs a suite against a backend and writes the run directory, reporting progress to
/// `on_event`.
pub fn execute(suite: &Suite, backend: &dyn Backend, opts: &RunOptions, on_event: &mut OnRunEvent<'_>) -> Result<RunOutcome> {
    let started = now_utc();
    let selected = select_cases(suite, opts);
    if selected.is_empty() {
        return Err(Error::Invalid(format!("no cases selected from {} (categories: {:?})", suite.path.display(), suite.category_counts())));
    }
    let cases: Vec<&Case> = selected.iter().map(|c| c.case).collect();
    let dest = store::prepare_destination(&opts.out, &opts.name, opts.overwrite)?;
    // Scorers' models and clients are loaded before generating, so a missing embedding model
    // or API key fails the run now, not after every case is generated.
    let ctx = ScoreContext::new(backend.info().kind.clone(), backend.reference_model()).with_judges(opts.judges.clone());
    for (rubric, _) in score::by_rubric(&selected) {
        for check in &rubric.checks {
            check.scorer.prepare(&ctx).map_err(|e| Error::Rubric { path: rubric.path.clone(), message: format!("check `{}`: {e}", check.name) })?;
        }
    }
    let t0 = Instant::now();
    let (outputs, cached) = generate_all(&cases, backend, opts, on_event)?;
    let generation_s = t0.elapsed().as_secs_f64();
    on_event(RunEvent::Scoring { cases: cases.len() });
    let t1 = Instant::now();
    let scores = score::score_all(&selected, &outputs, &ctx)?;
    let scoring_s = t1.elapsed().as_secs_f64();
    let outcomes: Vec<CaseOutcome> = selected
        .iter()
        .zip(outputs)
        .zip(scores)
        .zip(cached)
        .map(|(((c, generated), score), cached)| CaseOutcome { case: c.case, rubric: c.rubric, generated, cached, score })
        .collect();
    let n_cached = outcomes.iter().filter(|o| o.cached).count();
    let errored_checks = outcomes.iter().map(|o| o.score.errors).sum();
    let meta = store::RunMeta { suite, backend: backend.info(), opts, started, generation_s, scoring_s };
    let rows = store::write(&dest, &meta, &outcomes)?;
    Ok(RunOutcome { dir: dest.final_dir, cases: outcomes.len(), cached: n_cached, rows, errored_checks, generation_s, scoring_s })
}

/// Outputs for all cases (cache first), and whether each came from the cache.
fn generate_all(cases: &[&Case], backend: &dyn Backend, opts: &RunOptions, on_event: &mut OnRunEvent<'_>) -> Result<(Vec<Generated>, Vec<bool>)> {
    let mut outputs: Vec<Option<Generated>> = vec![None; cases.len()];
    let mut cached = vec![false; cases.len()];
    let mut cache = match backend.generates() {
        true => Some(GenerationCache::open(&opts.cache.clone().unwrap_or_else(|| opts.out.join(".cache").join("generations.jsonl")))?),
        false => None,
    };
    let keys: Vec<String> = cases.iter().map(|c| GenerationCache::key(backend.info(), &opts.decoding, c)).collect();
    if let Some(cache) = &cache {
        if cache.unreadable_lines > 0 {
            on_event(RunEvent::CacheLinesSkipped(cache.unreadable_lines));
        }
        for (i, key) in keys.iter().enumerate() {
            if let Some(g) = cache.get(key) {
                outputs[i] = Some(g.clone());
                cached[i] = true;
            }
        }
    }
    let pending: Vec<usize> = (0..cases.len()).filter(|&i| outputs[i].is_none()).collect();
    if !pending.is_empty() {
        on_event(RunEvent::Generating { pending: pending.len(), cached: cases.len() - pending.len() });
        let pending_cases: Vec<&Case> = pending.iter().map(|&i| cases[i]).collect();
        let mut errors: Vec<String> = Vec::new();
        let mut store_error = None;
        let mut finished = 0;
        backend.generate(&pending_cases, &opts.decoding, &mut |j, result| {
            let i = pending[j];
            match result {
                Ok(g) => {
                    if let Some(cache) = cache.as_mut() {
                        if let Err(e) = cache.put(keys[i].clone(), g.clone()) {
                            store_error.get_or_insert(e);
                        }
                    }
                    outputs[i] = Some(g);
                }
                Err(e) => errors.push(e.to_string()),
            }
            finished += 1;
            on_event(RunEvent::Generated { done: finished, pending: pending.len() });
        })?;
        if let Some(e) = store_error {
            return Err(e);
        }
        if !errors.is_empty() {
            let done = outputs.iter().filter(|o| o.is_some()).count();
            let first = errors.iter().take(5).cloned().collect::<Vec<_>>().join("\n  ");
            return Err(Error::Incomplete { failed: errors.len(), total: cases.len(), done, first });
        }
    }
    let outputs = outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.ok_or_else(|| Error::Invalid("the backend returned no output".into()).for_case(&cases[i].id)))
        .collect::<Result<Vec<_>>>()?;
    Ok((outputs, cached))
}

/// Seconds since the Unix epoch, and the same as an RFC 3339 UTC timestamp.
pub fn now_utc() -> (u64, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (secs, rfc3339(secs))
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_798_588_800), "2026-12-30T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
