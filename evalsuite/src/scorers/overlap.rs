//! Reference-overlap scorers: ROUGE-1/2/L F1 and sentence BLEU-4 against the case's
//! reference (the metrics themselves live in [`crate::metrics`]).

use std::sync::Arc;

use serde::Deserialize;

use super::{each, params, Item, ScoreContext, Scorer, Value};
use crate::error::Result;
use crate::metrics::bleu;
use crate::metrics::rouge::{rouge_variant, RougeVariant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `rouge1`, `rouge2`, `rougeL`: ROUGE F1 against the reference.
#[derive(Debug, Clone)]
pub struct Rouge(RougeVariant);

impl Rouge {
    fn build(table: toml::Table, variant: RougeVariant) -> Result<Arc<dyn Scorer>, String> {
        params::<NoParams>(table)?;
        Ok(Arc::new(Self(variant)))
    }

    /// `rouge1` (no parameters).
    pub fn build_1(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Self::build(table, RougeVariant::Rouge1)
    }

    /// `rouge2` (no parameters).
    pub fn build_2(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Self::build(table, RougeVariant::Rouge2)
    }

    /// `rougeL` (no parameters).
    pub fn build_l(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Self::build(table, RougeVariant::RougeL)
    }
}

impl Scorer for Rouge {
    fn kind(&self) -> &'static str {
        match self.0 {
            RougeVariant::Rouge1 => "rouge1",
            RougeVariant::Rouge2 => "rouge2",
            RougeVariant::RougeL => "rougeL",
        }
    }

    fn default_threshold(&self) -> f64 {
        0.5
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| Value::of(rouge_variant(&it.case.reference, it.output, self.0).f1))
    }
}

/// `bleu`: sentence BLEU-4 (sacrebleu, exponential smoothing) against the reference, 0–1.
#[derive(Debug, Clone)]
pub struct Bleu;

impl Bleu {
    /// From a rubric check's parameters (none).
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        params::<NoParams>(table)?;
        Ok(Arc::new(Self))
    }
}

impl Scorer for Bleu {
    fn kind(&self) -> &'static str {
        "bleu"
    }

    fn default_threshold(&self) -> f64 {
        0.5
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| Value::of(bleu::sentence_bleu(&it.case.reference, it.output) / 100.0))
    }
}
