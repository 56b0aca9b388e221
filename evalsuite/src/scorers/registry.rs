//! The scorer registry: a rubric's `scorer = "…"` name → the function that builds that
//! scorer from the check's parameters. Adding a scorer is its file plus one line in
//! [`BUILTIN`]; code that brings its own scorers adds them with [`Registry::with`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::embedding::Embedding;
use super::judge::JudgeSpec;
use super::overlap::{Bleu, Rouge};
use super::perplexity::Perplexity;
use super::structure::{JsonFields, JsonValid, LocationLine, Sections};
use super::text::{Contains, Exact, Keywords, Length, RegexMatch};
use super::Scorer;

/// Builds a scorer from a check's parameters (the check's table without `name`, `weight`,
/// `threshold` and `scorer`); errors name the parameter.
pub type Build = fn(toml::Table) -> Result<Arc<dyn Scorer>, String>;

/// The scorers every rubric can name.
pub const BUILTIN: &[(&str, Build)] = &[
    ("exact", Exact::build),
    ("contains", Contains::build_one),
    ("contains_all", Contains::build_all),
    ("contains_any", Contains::build_any),
    ("keywords", Keywords::build),
    ("regex", RegexMatch::build),
    ("length", Length::build),
    ("sections", Sections::build),
    ("location_line", LocationLine::build),
    ("json_valid", JsonValid::build),
    ("json_fields", JsonFields::build),
    ("rouge1", Rouge::build_1),
    ("rouge2", Rouge::build_2),
    ("rougeL", Rouge::build_l),
    ("rouge_l", Rouge::build_l),
    ("bleu", Bleu::build),
    ("embedding", Embedding::build),
    ("perplexity", Perplexity::build),
    ("judge", JudgeSpec::build),
];

/// Scorer names and their builders.
#[derive(Debug, Clone)]
pub struct Registry {
    builders: BTreeMap<String, Build>,
}

impl Default for Registry {
    /// The built-in scorers.
    fn default() -> Self {
        Self { builders: BUILTIN.iter().map(|(name, build)| (name.to_string(), *build)).collect() }
    }
}

impl Registry {
    /// This registry with `name` built by `build` (replacing a scorer of that name).
    pub fn with(mut self, name: &str, build: Build) -> Self {
        self.builders.insert(name.to_string(), build);
        self
    }

    /// The scorer `name` built from `params`.
    pub fn build(&self, name: &str, params: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        match self.builders.get(name) {
            Some(build) => build(params),
            None => Err(format!("unknown scorer `{name}` (known: {})", self.names().collect::<Vec<_>>().join(", "))),
        }
    }

    /// The names it knows, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.builders.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_reports_its_registered_name() {
        // Each builder, given the smallest valid parameters, builds a scorer whose kind is
        // the name it is registered under (results record the kind).
        let minimal = |name: &str| -> toml::Table {
            let text = match name {
                "contains" => "text = \"x\"",
                "contains_all" | "contains_any" => "texts = [\"x\"]",
                "regex" => "pattern = \"x\"",
                "length" => "max_chars = 3",
                "sections" => "sections = [\"A:\"]",
                "json_fields" => "fields = { a = \"string\" }",
                "judge" => "endpoint = \"http://127.0.0.1:9\"\nmodel = \"m\"",
                _ => "",
            };
            toml::from_str(text).unwrap()
        };
        let registry = Registry::default();
        for (name, _) in BUILTIN {
            let scorer = registry.build(name, minimal(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = if *name == "rouge_l" { "rougeL" } else { name };
            assert_eq!(scorer.kind(), expected);
        }
        let err = registry.build("nope", toml::Table::new()).unwrap_err();
        assert!(err.contains("unknown scorer `nope`") && err.contains("rougeL"), "{err}");
    }
}
