//! Rubrics: TOML files listing weighted checks. Each check names a scorer (looked up in a
//! [`Registry`]), its parameters and a pass threshold; a case's score is the weighted mean
//! of its checks' scores ([`Rubric::score_case`], the one place it is computed), and each
//! check's raw value and pass/fail are kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hashing;
use crate::scorers::registry::Registry;
use crate::scorers::{Direction, Scorer, Value};

/// One weighted check of a rubric.
#[derive(Debug, Clone)]
pub struct Check {
    /// Unique name within the rubric (a column in results).
    pub name: String,
    /// Weight in the case's weighted mean (> 0).
    pub weight: f64,
    /// Pass threshold on the raw value (see [`Direction`]).
    pub threshold: f64,
    /// The scorer, parameters checked.
    pub scorer: Arc<dyn Scorer>,
}

impl Check {
    /// Whether `value` passes this check's threshold (a missing value never does).
    pub fn passes(&self, value: f64) -> bool {
        value.is_finite()
            && match self.scorer.direction() {
                Direction::HigherIsBetter => value >= self.threshold,
                Direction::LowerIsBetter => value <= self.threshold,
            }
    }

    /// This check's result for one value. A value that could not be computed (NaN) is an
    /// error: neither passed nor failed, and left out of the case score.
    pub fn result(&self, value: Value) -> CheckResult {
        let errored = value.value.is_nan();
        let passed = !errored && self.passes(value.value);
        let score = if errored {
            f64::NAN
        } else if value.value.is_finite() {
            self.scorer.contribution(value.value, passed)
        } else {
            0.0
        };
        CheckResult {
            check: self.name.clone(),
            scorer: self.scorer.kind().to_string(),
            weight: self.weight,
            threshold: self.threshold,
            value: value.value,
            passed,
            errored,
            score,
            detail: value.detail,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Check name.
    pub check: String,
    /// Scorer kind.
    pub scorer: String,
    /// Weight in the case score.
    pub weight: f64,
    /// Pass threshold.
    pub threshold: f64,
    /// Raw value (NaN when it could not be computed).
    pub value: f64,
    /// Whether the value passes the threshold.
    pub passed: bool,
    /// Whether the scorer could not compute a value (`detail` says why).
    pub errored: bool,
    /// Contribution in 0–1 (NaN when errored).
    pub score: f64,
    /// Why (what was missing, why no value …).
    pub detail: String,
}

/// A case's checks and their weighted mean.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseScore {
    /// Per-check results, in rubric order.
    pub checks: Vec<CheckResult>,
    /// Weighted mean of the scores of the checks that did not error (NaN when all did).
    pub score: f64,
    /// Whether every check passed (false when any errored).
    pub passed: bool,
    /// Checks that errored.
    pub errors: usize,
}

/// A loaded rubric.
#[derive(Debug, Clone)]
pub struct Rubric {
    /// Name shown in results.
    pub name: String,
    /// What it checks, for people.
    pub description: String,
    /// The checks, in file order.
    pub checks: Vec<Check>,
    /// The file it came from (None for rubrics built in code).
    pub path: Option<PathBuf>,
    /// SHA-256 of the file's bytes (provenance).
    pub hash: String,
}

/// A rubric's provenance entry in `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricInfo {
    /// Rubric name.
    pub name: String,
    /// File path.
    pub path: Option<PathBuf>,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Check names with their scorer and weight.
    pub checks: Vec<(String, String, f64)>,
}

impl Rubric {
    /// Reads a rubric file with the built-in scorers.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &Registry::default())
    }

    /// Reads a rubric file; its scorers come from `registry`.
    pub fn load_with(path: &Path, registry: &Registry) -> Result<Self> {
        let text = tunelab::fsutil::read_input_text(path)?;
        let mut rubric = Self::parse_text(&text, registry).map_err(|message| Error::Rubric { path: Some(path.to_path_buf()), message })?;
        rubric.path = Some(path.to_path_buf());
        Ok(rubric)
    }

    /// Parses rubric TOML text with the built-in scorers (errors name the check and field).
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, &Registry::default())
    }

    /// Parses rubric TOML text; its scorers come from `registry`.
    pub fn parse_with(text: &str, registry: &Registry) -> Result<Self> {
        Self::parse_text(text, registry).map_err(|message| Error::Rubric { path: None, message })
    }

    fn parse_text(text: &str, registry: &Registry) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let name = string_field(&table, "name")?.ok_or("missing `name`")?;
        let description = string_field(&table, "description")?.unwrap_or_default();
        for key in table.keys() {
            if !["name", "description", "checks"].contains(&key.as_str()) {
                return Err(format!("unknown field `{key}` (expected name, description, checks)"));
            }
        }
        let checks = match table.get("checks") {
            Some(toml::Value::Array(items)) => items,
            Some(_) => return Err("`checks` must be an array of tables ([[checks]])".into()),
            None => return Err("no [[checks]]".into()),
        };
        let mut out: Vec<Check> = Vec::new();
        for (i, item) in checks.iter().enumerate() {
            let check = parse_check(item, registry).map_err(|e| format!("check #{}: {e}", i + 1))?;
            if out.iter().any(|c| c.name == check.name) {
                return Err(format!("check #{}: duplicate name `{}`", i + 1, check.name));
            }
            out.push(check);
        }
        if out.is_empty() {
            return Err("no [[checks]]".into());
        }
        Ok(Self { name, description, checks: out, path: None, hash: hashing::sha256_bytes(text.as_bytes()) })
    }

    /// A case's score from its checks' values (one per check, in check order): each
    /// check's result, the weighted mean over the checks that did not error, and whether
    /// all passed.
    pub fn score_case(&self, values: Vec<Value>) -> CaseScore {
        let checks: Vec<CheckResult> = self.checks.iter().zip(values).map(|(c, v)| c.result(v)).collect();
        let scored = || checks.iter().filter(|r| !r.errored);
        let total: f64 = scored().map(|r| r.weight).sum();
        let score = if total > 0.0 { scored().map(|r| r.weight * r.score).sum::<f64>() / total } else { f64::NAN };
        let errors = checks.len() - scored().count();
        CaseScore { passed: errors == 0 && checks.iter().all(|r| r.passed), errors, checks, score }
    }

    /// Provenance for `run.json`.
    pub fn info(&self) -> RubricInfo {
        RubricInfo {
            name: self.name.clone(),
            path: self.path.clone(),
            sha256: self.hash.clone(),
            checks: self.checks.iter().map(|c| (c.name.clone(), c.scorer.kind().to_string(), c.weight)).collect(),
        }
    }
}

fn string_field(table: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` must be a string, got {}", other.type_str())),
    }
}

fn number_field(table: &toml::Table, key: &str) -> Result<Option<f64>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Float(x)) => Ok(Some(*x)),
        Some(toml::Value::Integer(x)) => Ok(Some(*x as f64)),
        Some(other) => Err(format!("`{key}` must be a number, got {}", other.type_str())),
    }
}

fn parse_check(item: &toml::Value, registry: &Registry) -> Result<Check, String> {
    let toml::Value::Table(table) = item else { return Err("must be a table".into()) };
    let name = string_field(table, "name")?.ok_or("missing `name`")?;
    let weight = number_field(table, "weight")?.unwrap_or(1.0);
    if !(weight > 0.0 && weight.is_finite()) {
        return Err(format!("`{name}`: weight must be a positive number, got {weight}"));
    }
    let threshold = number_field(table, "threshold")?;
    let kind = string_field(table, "scorer")?.ok_or_else(|| format!("`{name}`: missing `scorer`"))?;
    let mut params = table.clone();
    for key in ["name", "weight", "threshold", "scorer"] {
        params.remove(key);
    }
    let scorer = registry.build(&kind, params).map_err(|e| format!("`{name}`: {e}"))?;
    let threshold = threshold.unwrap_or_else(|| scorer.default_threshold());
    let (low, high) = scorer.threshold_range();
    if !(threshold >= low && threshold <= high) {
        return Err(format!("`{name}`: threshold {threshold} is outside {}'s range {low}–{high}", scorer.kind()));
    }
    Ok(Check { name, weight, threshold, scorer })
}

/// A TOML error as `line L, column C: message`, without the quoted source line that
/// toml's own display adds (the file may not be TOML at all, and its text stays private).
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let mut end = span.start.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {}", e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weights_thresholds_and_defaults() {
        let r = Rubric::parse(
            r#"name = "r"
[[checks]]
name = "s"
scorer = "sections"
sections = ["A:", "B:"]
weight = 2
[[checks]]
name = "len"
scorer = "length"
max_chars = 10
"#,
        )
        .unwrap();
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.checks[0].weight, 2.0);
        assert_eq!(r.checks[1].threshold, 1.0);
        let s = r.score_case(vec![Value::of(1.0), Value::of(0.0)]);
        assert!((s.score - 2.0 / 3.0).abs() < 1e-12);
        assert!(!s.passed && s.checks[0].passed && !s.checks[1].passed);
        // A value that could not be computed is an error: not a pass, not a 0, and left out
        // of the mean (which is then the other check's alone).
        let s = r.score_case(vec![Value::failed("no model"), Value::of(1.0)]);
        assert!(s.checks[0].errored && !s.checks[0].passed && s.checks[0].score.is_nan());
        assert!(!s.passed && s.errors == 1 && (s.score - 1.0).abs() < 1e-12, "{s:?}");
        let s = r.score_case(vec![Value::failed("a"), Value::failed("b")]);
        assert!(s.score.is_nan() && s.errors == 2 && !s.passed);
    }

    #[test]
    fn errors_name_the_check_and_field() {
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"regex\"\npattern = \"(\"\n").unwrap_err().to_string();
        assert!(e.contains("check #1") && e.contains("`x`"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"nope\"\n").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"length\"\nmax_char = 3\n").unwrap_err().to_string();
        assert!(e.contains("max_char"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"rougeL\"\nthreshold = nan\n").unwrap_err().to_string();
        assert!(e.contains("threshold NaN is outside rougeL's range"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"bleu\"\nthreshold = 40\n").unwrap_err().to_string();
        assert!(e.contains("threshold 40"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"contains\"\ntext = \"\"\n").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
