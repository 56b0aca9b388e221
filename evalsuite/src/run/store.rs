//! The run directory: `run.json` (provenance), `results.parquet` (one row per case × check)
//! and `results.csv` (the same rows). Everything is written into a staging directory next
//! to the destination and installed at the end (`fsutil::install_dir`: an atomic exchange
//! with the old run under `--overwrite`), so a run directory is always complete: the old
//! run or the new one, never a mix or nothing. Staging left by a killed run is removed by
//! the next run of the same name.

use std::path::{Path, PathBuf};

use polars::prelude::{Column, CsvWriter, DataFrame, ParquetReader, ParquetWriter, PolarsResult, SerReader, SerWriter};

use super::record::{Counts, Durations, FileRef, Machine, RunRecord, Selection, SuiteRef, SCHEMA_VERSION};
use super::{CaseOutcome, RunOptions};
use crate::backend::BackendInfo;
use crate::error::{Error, Result};
use crate::rubric::CheckResult;
use crate::suite::Suite;

/// Rows file name.
pub const RESULTS_FILE: &str = "results.parquet";
/// Provenance file name.
pub const RUN_FILE: &str = "run.json";
/// CSV export file name.
pub const CSV_FILE: &str = "results.csv";
/// The evaluated adapter's training log, copied from its directory when it has one.
pub const TRAINER_LOG_FILE: &str = "trainer_log.jsonl";
/// A transformers Trainer's state (LLaMA-Factory writes it), copied likewise: its
/// `log_history` draws the loss curve when there is no `trainer_log.jsonl`.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

/// The training records an adapter directory holds, to copy into a run: `(source, name)`.
pub fn training_files(adapter: &Path) -> Vec<(PathBuf, &'static str)> {
    [TRAINER_LOG_FILE, TRAINER_STATE_FILE].into_iter().map(|name| (adapter.join(name), name)).filter(|(p, _)| p.is_file()).collect()
}

/// Where a run is staged and where it ends up.
#[derive(Debug)]
pub struct Destination {
    /// The staging directory (renamed to `final_dir` when complete).
    pub staging: PathBuf,
    /// The run directory.
    pub final_dir: PathBuf,
    overwrite: bool,
}

/// Checks the run name and that the run directory is free (or may be replaced).
pub fn prepare_destination(out: &Path, name: &str, overwrite: bool) -> Result<Destination> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::Invalid(format!("run name {name:?} must be a plain folder name")));
    }
    let final_dir = out.join(name);
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    tunelab::fsutil::recover_dir(&final_dir)?;
    if final_dir.exists() && !overwrite {
        return Err(Error::Invalid(format!("{} already exists; pick another --name or pass --overwrite", final_dir.display())));
    }
    let staging = tunelab::fsutil::sibling(&final_dir, "partial");
    Ok(Destination { staging, final_dir, overwrite })
}

/// What `run.json` records besides the results.
pub struct RunMeta<'a> {
    /// The suite evaluated.
    pub suite: &'a Suite,
    /// The backend used.
    pub backend: &'a BackendInfo,
    /// Run settings.
    pub opts: &'a RunOptions,
    /// Start time (Unix seconds, RFC 3339).
    pub started: (u64, String),
    /// Seconds generating.
    pub generation_s: f64,
    /// Seconds scoring.
    pub scoring_s: f64,
}

/// Builds the results table: one row per case × check.
pub fn results_frame(run: &str, outcomes: &[CaseOutcome]) -> PolarsResult<DataFrame> {
    let rows: Vec<(&CaseOutcome, &CheckResult)> = outcomes.iter().flat_map(|o| o.score.checks.iter().map(move |c| (o, c))).collect();
    let s = |f: &dyn Fn(&CaseOutcome, &CheckResult) -> String| rows.iter().map(|(o, c)| f(o, c)).collect::<Vec<String>>();
    let f = |f: &dyn Fn(&CaseOutcome, &CheckResult) -> f64| rows.iter().map(|(o, c)| f(o, c)).collect::<Vec<f64>>();
    let b = |f: &dyn Fn(&CaseOutcome, &CheckResult) -> bool| rows.iter().map(|(o, c)| f(o, c)).collect::<Vec<bool>>();
    let u = |f: &dyn Fn(&CaseOutcome, &CheckResult) -> Option<u64>| rows.iter().map(|(o, c)| f(o, c)).collect::<Vec<Option<u64>>>();
    let columns = vec![
        Column::new("run".into(), s(&|_, _| run.to_string())),
        Column::new("category".into(), s(&|o, _| o.case.category.clone())),
        Column::new("case_id".into(), s(&|o, _| o.case.id.clone())),
        Column::new("tags".into(), s(&|o, _| o.case.tags.join(","))),
        Column::new("rubric".into(), s(&|o, _| o.rubric.name.clone())),
        Column::new("prompt".into(), s(&|o, _| o.case.prompt_text())),
        Column::new("reference".into(), s(&|o, _| o.case.reference.clone())),
        Column::new("output".into(), s(&|o, _| o.generated.text.clone())),
        Column::new("check".into(), s(&|_, c| c.check.clone())),
        Column::new("scorer".into(), s(&|_, c| c.scorer.clone())),
        Column::new("weight".into(), f(&|_, c| c.weight)),
        Column::new("threshold".into(), f(&|_, c| c.threshold)),
        Column::new("value".into(), f(&|_, c| c.value)),
        Column::new("score".into(), f(&|_, c| c.score)),
        Column::new("passed".into(), b(&|_, c| c.passed)),
        Column::new("error".into(), b(&|_, c| c.errored)),
        Column::new("detail".into(), s(&|_, c| c.detail.clone())),
        Column::new("case_score".into(), f(&|o, _| o.score.score)),
        Column::new("case_passed".into(), b(&|o, _| o.score.passed)),
        Column::new("latency_s".into(), f(&|o, _| o.generated.latency_s)),
        Column::new("prompt_tokens".into(), u(&|o, _| o.generated.prompt_tokens.map(|n| n as u64))),
        Column::new("completion_tokens".into(), u(&|o, _| o.generated.completion_tokens.map(|n| n as u64))),
        Column::new("cached_prompt_tokens".into(), u(&|o, _| o.generated.cached_prompt_tokens.map(|n| n as u64))),
        Column::new("finish".into(), s(&|o, _| o.generated.finish.clone())),
        Column::new("cached".into(), b(&|o, _| o.cached)),
    ];
    DataFrame::new(rows.len(), columns)
}

/// Writes the run directory; returns the number of result rows.
pub fn write(dest: &Destination, meta: &RunMeta, outcomes: &[CaseOutcome]) -> Result<usize> {
    let df = results_frame(&meta.opts.name, outcomes).map_err(|source| Error::Table { path: dest.staging.join(RESULTS_FILE), source })?;
    let training = meta.backend.adapter.as_ref().map(|a| training_files(Path::new(a))).unwrap_or_default();
    write_table(dest, &record(meta, outcomes), df, &training)
}

/// Writes a run directory from its record and results table, with `extra` files copied in
/// (the adapter's training records, see [`training_files`]): staged, synced, then installed
/// in one rename. Returns the number of result rows.
pub fn write_table(dest: &Destination, record: &RunRecord, mut df: DataFrame, extra: &[(PathBuf, &'static str)]) -> Result<usize> {
    let staging = &dest.staging;
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(|e| Error::io("clearing", staging, e))?;
    }
    std::fs::create_dir_all(staging).map_err(|e| Error::io("creating", staging, e))?;
    let result = (|| -> Result<usize> {
        let table = |name: &str| staging.join(name);
        let writing = |name: &'static str| move |e: std::io::Error| Error::io("writing", staging.join(name), e);
        let file = std::fs::File::create(table(RESULTS_FILE)).map_err(writing(RESULTS_FILE))?;
        ParquetWriter::new(file).finish(&mut df).map_err(|source| Error::Table { path: table(RESULTS_FILE), source })?;
        let mut csv = std::fs::File::create(table(CSV_FILE)).map_err(writing(CSV_FILE))?;
        CsvWriter::new(&mut csv).include_header(true).finish(&mut df).map_err(|source| Error::Table { path: table(CSV_FILE), source })?;
        let run_json = record.to_json().map_err(|e| Error::Invalid(format!("cannot write the run record: {e}")))?;
        std::fs::write(table(RUN_FILE), run_json).map_err(writing(RUN_FILE))?;
        let mut written = vec![RESULTS_FILE, CSV_FILE, RUN_FILE];
        // The adapter's training records travel with the run, so a report can draw its loss
        // curve after the adapter directory has moved.
        for (source, name) in extra {
            std::fs::copy(source, table(name)).map_err(writing(name))?;
            written.push(name);
        }
        for name in written {
            std::fs::File::open(table(name)).and_then(|f| f.sync_all()).map_err(writing(name))?;
        }
        Ok(df.height())
    })();
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_dir_all(staging);
            return Err(e);
        }
    };
    if dest.final_dir.exists() && !dest.overwrite {
        let _ = std::fs::remove_dir_all(staging);
        return Err(Error::Invalid(format!("{} appeared while this run was going; pick another --name or pass --overwrite", dest.final_dir.display())));
    }
    tunelab::fsutil::install_dir(staging, &dest.final_dir)?;
    Ok(rows)
}

/// The run's provenance record.
fn record(meta: &RunMeta, outcomes: &[CaseOutcome]) -> RunRecord {
    let suite = meta.suite;
    RunRecord {
        schema_version: SCHEMA_VERSION,
        name: meta.opts.name.clone(),
        tunelab_version: env!("CARGO_PKG_VERSION").into(),
        command: meta.opts.command.clone(),
        started_at: meta.started.1.clone(),
        suite: SuiteRef {
            name: suite.name.clone(),
            path: suite.path.clone(),
            sha256: suite.hash.clone(),
            files: suite.files.iter().map(|(p, h)| FileRef { path: p.clone(), sha256: h.clone() }).collect(),
        },
        rubrics: suite.used_rubrics().iter().map(|r| r.info()).collect(),
        backend: meta.backend.clone(),
        decoding: meta.opts.decoding.clone(),
        seed: meta.opts.decoding.seed,
        selection: Selection { categories: meta.opts.categories.clone(), limit_per_category: meta.opts.limit_per_category, shard: meta.opts.shard },
        machine: Machine::current(),
        durations_s: Durations { generation: meta.generation_s, scoring: meta.scoring_s, total: meta.generation_s + meta.scoring_s },
        counts: Counts {
            cases: outcomes.len(),
            cached: outcomes.iter().filter(|o| o.cached).count(),
            rows: outcomes.iter().map(|o| o.score.checks.len()).sum::<usize>(),
            errored_checks: outcomes.iter().map(|o| o.score.errors).sum::<usize>(),
        },
    }
}

/// Reads a run's results table, checked against its contract ([`super::validate`]). A
/// corrupted file is an error naming it: polars' Parquet reader can panic on malformed
/// metadata, so the panic is caught here.
pub fn read_results(run_dir: &Path) -> Result<DataFrame> {
    let path = run_dir.join(RESULTS_FILE);
    let file = std::fs::File::open(&path).map_err(|e| Error::io("reading (is this a run directory?)", &path, e))?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ParquetReader::new(file).finish())) {
        Ok(Ok(df)) => {
            super::validate::check_results(&df).map_err(|why| Error::Invalid(format!("{}: not a valid results table: {why}", path.display())))?;
            Ok(df)
        }
        Ok(Err(source)) => Err(Error::Table { path, source }),
        Err(panic) => {
            let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            Err(Error::Invalid(format!("{}: not a readable results table (corrupted Parquet: {why})", path.display())))
        }
    }
}

/// Reads a run directory: its record and its results table, which must hold the cases and
/// rows the record counts (a table cut short or extended by hand is refused, naming both).
pub fn read_run(run_dir: &Path) -> Result<(RunRecord, DataFrame)> {
    let record = read_record(run_dir)?;
    let df = read_results(run_dir)?;
    super::validate::check_counts(&record.counts, &df)
        .map_err(|why| Error::Invalid(format!("{}: {why} ({} says otherwise)", run_dir.join(RESULTS_FILE).display(), run_dir.join(RUN_FILE).display())))?;
    Ok((record, df))
}

/// Reads a run's provenance record (`run.json`).
pub fn read_record(run_dir: &Path) -> Result<RunRecord> {
    RunRecord::read(&run_dir.join(RUN_FILE))
}
