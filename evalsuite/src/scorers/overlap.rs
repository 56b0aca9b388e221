//! Reference-overlap scorers: ROUGE-1/2/L F1 and sentence BLEU-4 against the case's
//! reference (the metrics themselves live in [`crate::metrics`]).

use std::sync::Arc;

use serde::Deserialize;

use super::{each, params, Item, ScoreContext, Scorer, Value};
use crate::error::Result;
use crate::metrics::rouge::{rouge_variant, RougeVariant};
use crate::metrics::{bleu, llamafactory};

/// Whose definition of the metric a check computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `rouge-score` (ROUGE) and `sacrebleu` (BLEU): the default.
    #[default]
    Standard,
    /// LLaMA-Factory's `predict_results.json` figures: jieba words and `rouge_chinese` for
    /// ROUGE, NLTK `sentence_bleu` on characters with `method3` smoothing for BLEU-4
    /// (see [`crate::metrics::llamafactory`]); a run's mean × 100 is LLaMA-Factory's figure.
    Llamafactory,
}

/// A reference-overlap check's parameters: only `mode`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlapParams {
    #[serde(default)]
    mode: Mode,
}

/// `rouge1`, `rouge2`, `rougeL`: ROUGE F1 against the reference.
#[derive(Debug, Clone)]
pub struct Rouge(RougeVariant, Mode);

impl Rouge {
    fn build(table: toml::Table, variant: RougeVariant) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(Self(variant, params::<OverlapParams>(table)?.mode)))
    }

    /// `rouge1` (`mode` optional).
    pub fn build_1(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Self::build(table, RougeVariant::Rouge1)
    }

    /// `rouge2` (`mode` optional).
    pub fn build_2(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Self::build(table, RougeVariant::Rouge2)
    }

    /// `rougeL` (`mode` optional).
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
        each(items, |it| {
            Value::of(match self.1 {
                Mode::Standard => rouge_variant(&it.case.reference, it.output, self.0).f1,
                Mode::Llamafactory => {
                    let r = llamafactory::rouge(&it.case.reference, it.output);
                    let v = match self.0 {
                        RougeVariant::Rouge1 => r.rouge_1,
                        RougeVariant::Rouge2 => r.rouge_2,
                        RougeVariant::RougeL => r.rouge_l,
                    };
                    v / 100.0
                }
            })
        })
    }
}

/// `bleu`: sentence BLEU-4 against the reference, 0–1 (sacrebleu with exponential
/// smoothing, or LLaMA-Factory's NLTK figure with `mode = "llamafactory"`).
#[derive(Debug, Clone)]
pub struct Bleu(Mode);

impl Bleu {
    /// From a rubric check's parameters (`mode` optional).
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(Self(params::<OverlapParams>(table)?.mode)))
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
        each(items, |it| {
            Value::of(
                match self.0 {
                    Mode::Standard => bleu::sentence_bleu(&it.case.reference, it.output),
                    Mode::Llamafactory => llamafactory::bleu4(&it.case.reference, it.output),
                } / 100.0,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_mode_parameter_picks_the_definition() {
        assert_eq!(format!("{:?}", Bleu::build(table("")).unwrap()), "Bleu(Standard)");
        assert_eq!(format!("{:?}", Bleu::build(table("mode = \"llamafactory\"")).unwrap()), "Bleu(Llamafactory)");
        assert_eq!(format!("{:?}", Rouge::build_l(table("mode = \"llamafactory\"")).unwrap()), "Rouge(RougeL, Llamafactory)");
        let err = Bleu::build(table("mode = \"nltk\"")).unwrap_err();
        assert!(err.contains("nltk") && err.contains("llamafactory"), "{err}");
        assert!(Rouge::build_1(table("smoothing = 1")).is_err(), "unknown parameters are refused");
    }
}
