//! Joining the runs of a sharded evaluation (`eval run --shard I/N`, one run per slice,
//! perhaps on different machines) into one run directory, as if one `eval run` had done it.
//!
//! The shards must be slices 1..N of the same N, each once, and agree on everything that
//! decides a result: suite (by hash), rubrics, backend (model and adapter by hash), decoding
//! and seed, and the case selection, and their results tables have the same columns (one
//! tunelab version). Anything else is refused with the field and the runs named; nothing is
//! written then.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use polars::prelude::{Column, DataFrame};

use super::record::RunRecord;
use super::store::{prepare_destination, read_record, read_run, training_files, write_table};
use crate::error::{Error, Result};

/// What [`merge_shards`] wrote.
#[derive(Debug)]
pub struct MergedRun {
    /// The run directory.
    pub dir: PathBuf,
    /// Cases in it.
    pub cases: usize,
    /// Result rows (case × check).
    pub rows: usize,
}

/// Checks that `a` and `b` could be slices of one run; names the first field they differ in.
fn same_run(a: &RunRecord, b: &RunRecord) -> std::result::Result<(), &'static str> {
    let fields: [(&'static str, bool); 7] = [
        ("suite (its files' hashes)", a.suite.sha256 == b.suite.sha256),
        ("rubrics", a.rubrics == b.rubrics),
        ("backend (model, adapter, endpoint)", a.backend == b.backend),
        ("decoding settings", a.decoding == b.decoding),
        ("seed", a.seed == b.seed),
        ("categories", a.selection.categories == b.selection.categories),
        ("per-category limit", a.selection.limit_per_category == b.selection.limit_per_category),
    ];
    fields.into_iter().find(|(_, same)| !same).map_or(Ok(()), |(field, _)| Err(field))
}

/// Checks that two shards' results tables have the same columns in the same order (tables
/// written by different tunelab versions may not); says how they differ.
fn columns_match(a: &DataFrame, b: &DataFrame) -> std::result::Result<(), String> {
    let names = |d: &DataFrame| d.get_column_names().into_iter().map(|n| n.to_string()).collect::<Vec<String>>();
    let (a, b) = (names(a), names(b));
    if a == b {
        return Ok(());
    }
    let only = |x: &[String], y: &[String]| x.iter().filter(|c| !y.contains(c)).cloned().collect::<Vec<_>>().join(", ");
    Err(format!(
        "have different results columns (only in the first: [{}]; only in the second: [{}]); the shards of one run are written by the same tunelab version",
        only(&a, &b),
        only(&b, &a)
    ))
}

/// Missing shards named in a refusal.
const MISSING_LISTED: usize = 10;

/// Merges the shard runs in `dirs` into `out/name`.
pub fn merge_shards(dirs: &[PathBuf], out: &Path, name: &str, overwrite: bool, command: &str) -> Result<MergedRun> {
    let records: Vec<RunRecord> = dirs.iter().map(|d| read_record(d)).collect::<Result<_>>()?;
    let Some(first) = records.first() else { return Err(Error::Invalid("give the shard runs to merge".into())) };
    let mut shards = Vec::new();
    for (dir, r) in dirs.iter().zip(&records) {
        let shard = r.selection.shard.ok_or_else(|| Error::Invalid(format!("{} is not a shard (it was not run with --shard I/N)", dir.display())))?;
        shards.push(shard);
        if let Err(field) = same_run(first, r) {
            return Err(Error::Invalid(format!(
                "{} and {} differ in their {field}; the shards of one run share suite, rubrics, backend, decoding and selection",
                dirs[0].display(),
                dir.display()
            )));
        }
    }
    let count = shards[0].count;
    if let Some((dir, s)) = dirs.iter().zip(&shards).find(|(_, s)| s.count != count) {
        return Err(Error::Invalid(format!("{} is shard {s}, but {} is one of {count}", dir.display(), dirs[0].display())));
    }
    let mut seen = std::collections::BTreeMap::new();
    for (dir, s) in dirs.iter().zip(&shards) {
        if let Some(other) = seen.insert(s.index, dir) {
            return Err(Error::Invalid(format!("shard {s} is given twice: {} and {}", other.display(), dir.display())));
        }
    }
    // The first few missing (the count comes from a file: never list or allocate per shard).
    let missing: Vec<String> = (1..=count).filter(|i| !seen.contains_key(i)).take(MISSING_LISTED + 1).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        let more = if missing.len() > MISSING_LISTED { " …" } else { "" };
        return Err(Error::Invalid(format!(
            "shard(s) {}{more} missing; a merged run needs all {count}",
            missing[..missing.len().min(MISSING_LISTED)].join(", ")
        )));
    }

    let mut merged: Option<DataFrame> = None;
    let mut cases: HashSet<(String, String)> = HashSet::new();
    for dir in dirs {
        // The table must hold what its record counts (the merged record sums the counts).
        let (_, df) = read_run(dir)?;
        let column = |c: &str| super::summary::strings(&df, c).map_err(|source| Error::Table { path: dir.join(super::store::RESULTS_FILE), source });
        let shard_cases: HashSet<(String, String)> = column("category")?.into_iter().zip(column("case_id")?).collect();
        if let Some((category, id)) = shard_cases.iter().find(|c| cases.contains(*c)) {
            return Err(Error::Invalid(format!(
                "case {category}/{id} is in two shards (the last is {}); were they cut from the same selection?",
                dir.display()
            )));
        }
        cases.extend(shard_cases);
        if let Some(all) = &merged {
            columns_match(all, &df).map_err(|why| Error::Invalid(format!("{} and {} {why}", dirs[0].display(), dir.display())))?;
        }
        let mut df = df;
        let height = df.height();
        df.with_column(Column::new("run".into(), vec![name.to_string(); height]))
            .map_err(|source| Error::Table { path: dir.join(super::store::RESULTS_FILE), source })?;
        merged = Some(match merged {
            None => df,
            Some(mut all) => {
                all.vstack_mut(&df).map_err(|source| Error::Table { path: dir.join(super::store::RESULTS_FILE), source })?;
                all
            }
        });
    }
    let df = merged.expect("at least one shard");

    let mut record = first.clone();
    record.name = name.to_string();
    record.command = command.to_string();
    record.selection.shard = None;
    record.started_at = records.iter().map(|r| r.started_at.clone()).min().unwrap_or_default();
    record.durations_s.generation = records.iter().map(|r| r.durations_s.generation).sum();
    record.durations_s.scoring = records.iter().map(|r| r.durations_s.scoring).sum();
    record.durations_s.total = records.iter().map(|r| r.durations_s.total).sum();
    record.counts.cases = records.iter().map(|r| r.counts.cases).sum();
    record.counts.cached = records.iter().map(|r| r.counts.cached).sum();
    record.counts.rows = records.iter().map(|r| r.counts.rows).sum();
    record.counts.errored_checks = records.iter().map(|r| r.counts.errored_checks).sum();

    let dest = prepare_destination(out, name, overwrite)?;
    let rows = write_table(&dest, &record, df, &training_files(&dirs[0]))?;
    Ok(MergedRun { dir: dest.final_dir, cases: cases.len(), rows })
}
