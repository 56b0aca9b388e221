//! A stored run read back case by case: its record and, per case, the output, the case
//! score and every check's result, from `run.json` and `results.parquet`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::{DataFrame, PolarsResult};

use crate::error::{Error, Result};
use crate::run::record::RunRecord;
use crate::run::store;
use crate::run::summary::{bools, floats, strings};

/// One check's result for one case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckRow {
    /// Check name.
    pub check: String,
    /// Raw value (NaN when errored).
    pub value: f64,
    /// Whether it passed.
    pub passed: bool,
    /// Whether it errored (no value).
    pub errored: bool,
    /// The scorer's detail (a judge's verdict, an error message).
    pub detail: String,
}

/// One case of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaseRow {
    /// Case id.
    pub case_id: String,
    /// Category.
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Prompt text.
    pub prompt: String,
    /// Reference answer.
    pub reference: String,
    /// The run's output.
    pub output: String,
    /// Weighted case score (NaN when every check errored).
    pub score: f64,
    /// Whether every check passed.
    pub passed: bool,
    /// Its checks, in rubric order.
    pub checks: Vec<CheckRow>,
}

/// A run directory read back.
#[derive(Debug, Clone)]
pub struct RunTable {
    /// The directory.
    pub dir: PathBuf,
    /// Its provenance record.
    pub record: RunRecord,
    /// Its cases, in run order.
    pub cases: Vec<CaseRow>,
}

impl RunTable {
    /// Reads the run directory `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let (record, df) = store::read_run(dir)?;
        let cases = cases(&df).map_err(|source| Error::Table { path: dir.join(store::RESULTS_FILE), source })?;
        Ok(Self { dir: dir.to_path_buf(), record, cases })
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Categories in order of first appearance.
    pub fn categories(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.cases {
            if !out.contains(&c.category) {
                out.push(c.category.clone());
            }
        }
        out
    }
}

/// Groups the rows (one per case × check) into cases.
fn cases(df: &DataFrame) -> PolarsResult<Vec<CaseRow>> {
    let (ids, categories, tags, prompts) = (strings(df, "case_id")?, strings(df, "category")?, strings(df, "tags")?, strings(df, "prompt")?);
    let (references, outputs, checks, details) = (strings(df, "reference")?, strings(df, "output")?, strings(df, "check")?, strings(df, "detail")?);
    let (values, case_scores) = (floats(df, "value")?, floats(df, "case_score")?);
    let (passed, errored, case_passed) = (bools(df, "passed")?, bools(df, "error")?, bools(df, "case_passed")?);
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut out: Vec<CaseRow> = Vec::new();
    for i in 0..df.height() {
        let key = (categories[i].clone(), ids[i].clone());
        let at = *index.entry(key).or_insert_with(|| {
            out.push(CaseRow {
                case_id: ids[i].clone(),
                category: categories[i].clone(),
                tags: tags[i].split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
                prompt: prompts[i].clone(),
                reference: references[i].clone(),
                output: outputs[i].clone(),
                score: case_scores[i],
                passed: case_passed[i],
                checks: Vec::new(),
            });
            out.len() - 1
        });
        out[at].checks.push(CheckRow { check: checks[i].clone(), value: values[i], passed: passed[i], errored: errored[i], detail: details[i].clone() });
    }
    Ok(out)
}
