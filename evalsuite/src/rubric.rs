//! Rubrics: TOML files listing weighted checks. Each check names a scorer, its parameters
//! and a pass threshold; a case's score is the weighted mean of its checks' scores, and each
//! check's raw value and pass/fail are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hashing;
use crate::scorers::{Direction, Scorer, ScorerSpec};

/// Why a rubric could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RubricError {
    /// The file could not be read.
    #[error("cannot read rubric {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a field has the wrong type.
    #[error("rubric {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One weighted check of a rubric.
#[derive(Debug, Clone)]
pub struct Check {
    /// Unique name within the rubric (a column in results).
    pub name: String,
    /// Weight in the case's weighted mean (> 0).
    pub weight: f64,
    /// Pass threshold on the raw value (see [`Direction`]).
    pub threshold: f64,
    /// The scorer, parameters compiled.
    pub scorer: Scorer,
}

impl Check {
    /// Whether `value` passes this check's threshold.
    pub fn passes(&self, value: f64) -> bool {
        match self.scorer.direction() {
            Direction::HigherIsBetter => value >= self.threshold,
            Direction::LowerIsBetter => value <= self.threshold,
        }
    }
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
    /// Reads and compiles a rubric file.
    pub fn load(path: &Path) -> Result<Self, RubricError> {
        let text = std::fs::read_to_string(path).map_err(|source| RubricError::Io { path: path.to_path_buf(), source })?;
        let mut rubric = Self::parse(&text).map_err(|message| RubricError::Invalid { path: path.to_path_buf(), message })?;
        rubric.path = Some(path.to_path_buf());
        Ok(rubric)
    }

    /// Parses rubric TOML text (errors name the check and field).
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
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
            let check = parse_check(item).map_err(|e| format!("check #{}: {e}", i + 1))?;
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

    /// The weighted mean of per-check scores (each in 0–1), in check order.
    pub fn case_score(&self, scores: &[f64]) -> f64 {
        let total: f64 = self.checks.iter().map(|c| c.weight).sum();
        self.checks.iter().zip(scores).map(|(c, s)| c.weight * s).sum::<f64>() / total
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

    /// Whether any check needs the evaluated model itself (perplexity).
    pub fn needs_model(&self) -> bool {
        self.checks.iter().any(|c| matches!(c.scorer, Scorer::Perplexity))
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

fn parse_check(item: &toml::Value) -> Result<Check, String> {
    let toml::Value::Table(table) = item else { return Err("must be a table".into()) };
    let name = string_field(table, "name")?.ok_or("missing `name`")?;
    let weight = number_field(table, "weight")?.unwrap_or(1.0);
    if !(weight > 0.0 && weight.is_finite()) {
        return Err(format!("`{name}`: weight must be a positive number, got {weight}"));
    }
    let threshold = number_field(table, "threshold")?;
    let mut params = table.clone();
    for key in ["name", "weight", "threshold"] {
        params.remove(key);
    }
    let spec: ScorerSpec = toml::Value::Table(params).try_into().map_err(|e: toml::de::Error| format!("`{name}`: {}", e.message()))?;
    let scorer = Scorer::compile(spec).map_err(|e| format!("`{name}`: {e}"))?;
    let threshold = threshold.unwrap_or_else(|| scorer.default_threshold());
    Ok(Check { name, weight, threshold, scorer })
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
        assert!((r.case_score(&[1.0, 0.0]) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_check_and_field() {
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"regex\"\npattern = \"(\"\n").unwrap_err();
        assert!(e.contains("check #1") && e.contains("`x`"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"nope\"\n").unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = Rubric::parse("name = \"r\"\n[[checks]]\nname = \"x\"\nscorer = \"length\"\nmax_char = 3\n").unwrap_err();
        assert!(e.contains("max_char"), "{e}");
    }
}
