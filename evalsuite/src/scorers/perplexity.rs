//! `perplexity`: the evaluated model's perplexity on the case's reference answer (lower is
//! better). Needs a backend that holds the model (the local one); others give no value.

use std::sync::Arc;

use serde::Deserialize;

use super::{params, Direction, Item, ScoreContext, Scorer, Value};
use crate::error::{Error, Result};

/// `perplexity` (no parameters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Perplexity {}

impl Perplexity {
    /// From a rubric check's parameters (none).
    pub fn build(table: toml::Table) -> std::result::Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for Perplexity {
    fn kind(&self) -> &'static str {
        "perplexity"
    }

    fn direction(&self) -> Direction {
        Direction::LowerIsBetter
    }

    fn default_threshold(&self) -> f64 {
        20.0
    }

    fn threshold_range(&self) -> (f64, f64) {
        (1.0, f64::INFINITY)
    }

    /// Without the evaluated model (an HTTP or predictions run) there is nothing to score
    /// with: refused before generating.
    fn prepare(&self, ctx: &ScoreContext<'_>) -> Result<()> {
        match ctx.reference_model() {
            Some(_) => Ok(()),
            None => Err(Error::Invalid(format!("perplexity needs the evaluated model; the {} backend does not hold it (use --model)", ctx.backend_kind()))),
        }
    }

    /// Perplexity is unbounded: a check contributes 1 when it passes, else 0.
    fn contribution(&self, _value: f64, passed: bool) -> f64 {
        f64::from(u8::from(passed))
    }

    fn score(&self, items: &[Item<'_>], ctx: &ScoreContext<'_>) -> Result<Vec<Value>> {
        let Some(model) = ctx.reference_model() else {
            let reason = format!("the {} backend cannot compute perplexity", ctx.backend_kind());
            return Ok(items.iter().map(|_| Value::failed(reason.clone())).collect());
        };
        Ok(items.iter().map(|it| model.perplexity(it.case).map_or_else(|e| Value::failed(e.to_string()), Value::of)).collect())
    }
}
