//! Scorers: the functions a rubric's checks apply to a model's output. Text scorers
//! ([`text`], [`structure`], and the ROUGE/BLEU in [`crate::metrics`]) are pure functions of
//! the output and the case; model scorers need a model: [`embedding`] (all-MiniLM-L6-v2 in
//! candle), perplexity (the evaluated model, from the backend) and [`judge`] (an
//! OpenAI-compatible endpoint).

pub mod embedding;
pub mod judge;
pub mod structure;
pub mod text;

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;
use serde::Deserialize;

use crate::metrics::bleu;
use crate::metrics::rouge::{rouge_variant, RougeVariant};
use crate::suite::Case;

/// A scorer as written in a rubric (`scorer = "..."` plus its parameters).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scorer", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScorerSpec {
    /// Output equals the reference after normalization.
    Exact {
        /// Normalizations applied to both texts before comparing.
        #[serde(default = "text::all_normalizations")]
        normalize: Vec<text::Normalization>,
    },
    /// Output contains `text`.
    Contains {
        /// The text to look for.
        text: String,
        /// Match case exactly (default: ignore case).
        #[serde(default)]
        case_sensitive: bool,
    },
    /// Fraction of `texts` the output contains.
    ContainsAll {
        /// The texts to look for.
        texts: Vec<String>,
        /// Match case exactly (default: ignore case).
        #[serde(default)]
        case_sensitive: bool,
    },
    /// Output contains at least one of `texts`.
    ContainsAny {
        /// The texts to look for.
        texts: Vec<String>,
        /// Match case exactly (default: ignore case).
        #[serde(default)]
        case_sensitive: bool,
    },
    /// Fraction of the case's `keywords` present (`a|b` = either).
    Keywords {},
    /// Output matches (`expect = true`) or does not match a regular expression.
    Regex {
        /// The regular expression.
        pattern: String,
        /// Whether the output should match (default) or must not.
        #[serde(default = "yes")]
        expect: bool,
    },
    /// Required section headers, in order and non-empty.
    Sections {
        /// Section headers, as they appear in the output.
        sections: Vec<String>,
        /// Whether they must appear in this order (default).
        #[serde(default = "yes")]
        in_order: bool,
        /// Whether each section must have content (default).
        #[serde(default = "yes")]
        non_empty: bool,
    },
    /// The line cited after `prefix` (`line N: text`) exists in the case's input.
    LocationLine {
        /// The text that introduces the cited location (default `Location:`).
        #[serde(default = "location_prefix")]
        prefix: String,
    },
    /// Output (or its fenced json block) parses as JSON.
    JsonValid {},
    /// Output's JSON object has these fields with these types.
    JsonFields {
        /// Field name → expected JSON type.
        fields: BTreeMap<String, structure::JsonType>,
    },
    /// Output length within bounds.
    Length {
        /// Fewest characters.
        min_chars: Option<usize>,
        /// Most characters.
        max_chars: Option<usize>,
        /// Fewest words.
        min_words: Option<usize>,
        /// Most words.
        max_words: Option<usize>,
    },
    /// ROUGE-1 F1 against the reference.
    #[serde(rename = "rouge1")]
    Rouge1 {},
    /// ROUGE-2 F1 against the reference.
    #[serde(rename = "rouge2")]
    Rouge2 {},
    /// ROUGE-L F1 against the reference.
    #[serde(rename = "rougeL", alias = "rouge_l")]
    RougeL {},
    /// Sentence BLEU-4 (sacrebleu, exponential smoothing) against the reference, 0–1.
    Bleu {},
    /// Cosine similarity of all-MiniLM-L6-v2 embeddings of output and reference.
    Embedding {
        /// The embedding model directory (default: all-MiniLM-L6-v2 from tunelab's model path).
        model: Option<PathBuf>,
    },
    /// Perplexity of the reference answer under the evaluated model.
    Perplexity {},
    /// An LLM judge's score through an OpenAI-compatible endpoint.
    Judge(judge::JudgeSpec),
}

fn yes() -> bool {
    true
}

fn location_prefix() -> String {
    "Location:".into()
}

/// Whether a higher or a lower value is better (decides how the threshold is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Pass when value ≥ threshold.
    HigherIsBetter,
    /// Pass when value ≤ threshold.
    LowerIsBetter,
}

/// A scorer with its parameters checked and compiled.
#[derive(Debug, Clone)]
pub enum Scorer {
    /// See [`ScorerSpec::Exact`].
    Exact(Vec<text::Normalization>),
    /// Needles (lower-cased unless case-sensitive), and how many must be present.
    Contains {
        /// The texts to look for.
        texts: Vec<String>,
        /// Match case exactly.
        case_sensitive: bool,
        /// One, all (fraction) or any of the texts.
        mode: text::ContainsMode,
    },
    /// See [`ScorerSpec::Keywords`].
    Keywords,
    /// See [`ScorerSpec::Regex`].
    Regex {
        /// The compiled expression.
        regex: Regex,
        /// Whether the output should match.
        expect: bool,
    },
    /// See [`ScorerSpec::Sections`].
    Sections {
        /// Section headers.
        sections: Vec<String>,
        /// Whether they must appear in order.
        in_order: bool,
        /// Whether each must have content.
        non_empty: bool,
    },
    /// See [`ScorerSpec::LocationLine`].
    LocationLine {
        /// The text that introduces the cited line.
        prefix: String,
    },
    /// See [`ScorerSpec::JsonValid`].
    JsonValid,
    /// See [`ScorerSpec::JsonFields`].
    JsonFields(BTreeMap<String, structure::JsonType>),
    /// See [`ScorerSpec::Length`].
    Length(text::LengthBounds),
    /// ROUGE-1/2/L F1 against the reference.
    Rouge(RougeVariant),
    /// See [`ScorerSpec::Bleu`].
    Bleu,
    /// Embedding cosine; the model directory (None = the fetched all-MiniLM-L6-v2).
    Embedding(Option<PathBuf>),
    /// See [`ScorerSpec::Perplexity`].
    Perplexity,
    /// See [`ScorerSpec::Judge`].
    Judge(judge::JudgeSpec),
}

/// One check's result on one output.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The raw value (e.g. F1, fraction, cosine, perplexity).
    pub value: f64,
    /// A short explanation for reports (what was missing, which line was cited …).
    pub detail: String,
}

impl Value {
    /// A value without explanation.
    pub fn of(value: f64) -> Self {
        Self { value, detail: String::new() }
    }

    /// A value with an explanation.
    pub fn with(value: f64, detail: impl Into<String>) -> Self {
        Self { value, detail: detail.into() }
    }
}

impl Scorer {
    /// Checks parameters (regex syntax, non-empty lists, bounds) and compiles them.
    pub fn compile(spec: ScorerSpec) -> Result<Self, String> {
        let nonempty = |v: &Vec<String>, what: &str| if v.is_empty() { Err(format!("`{what}` is empty")) } else { Ok(()) };
        let fold = |texts: Vec<String>, cs: bool| if cs { texts } else { texts.into_iter().map(|t| t.to_lowercase()).collect() };
        Ok(match spec {
            ScorerSpec::Exact { normalize } => Self::Exact(normalize),
            ScorerSpec::Contains { text, case_sensitive } => {
                Self::Contains { texts: fold(vec![text], case_sensitive), case_sensitive, mode: text::ContainsMode::All }
            }
            ScorerSpec::ContainsAll { texts, case_sensitive } => {
                nonempty(&texts, "texts")?;
                Self::Contains { texts: fold(texts, case_sensitive), case_sensitive, mode: text::ContainsMode::All }
            }
            ScorerSpec::ContainsAny { texts, case_sensitive } => {
                nonempty(&texts, "texts")?;
                Self::Contains { texts: fold(texts, case_sensitive), case_sensitive, mode: text::ContainsMode::Any }
            }
            ScorerSpec::Keywords {} => Self::Keywords,
            ScorerSpec::Regex { pattern, expect } => {
                Self::Regex { regex: Regex::new(&pattern).map_err(|e| format!("bad regex: {e}"))?, expect }
            }
            ScorerSpec::Sections { sections, in_order, non_empty } => {
                nonempty(&sections, "sections")?;
                Self::Sections { sections, in_order, non_empty }
            }
            ScorerSpec::LocationLine { prefix } => Self::LocationLine { prefix },
            ScorerSpec::JsonValid {} => Self::JsonValid,
            ScorerSpec::JsonFields { fields } => {
                if fields.is_empty() {
                    return Err("`fields` is empty".into());
                }
                Self::JsonFields(fields)
            }
            ScorerSpec::Length { min_chars, max_chars, min_words, max_words } => {
                let bounds = text::LengthBounds { min_chars, max_chars, min_words, max_words };
                bounds.validate()?;
                Self::Length(bounds)
            }
            ScorerSpec::Rouge1 {} => Self::Rouge(RougeVariant::Rouge1),
            ScorerSpec::Rouge2 {} => Self::Rouge(RougeVariant::Rouge2),
            ScorerSpec::RougeL {} => Self::Rouge(RougeVariant::RougeL),
            ScorerSpec::Bleu {} => Self::Bleu,
            ScorerSpec::Embedding { model } => Self::Embedding(model),
            ScorerSpec::Perplexity {} => Self::Perplexity,
            ScorerSpec::Judge(spec) => Self::Judge(spec.validated()?),
        })
    }

    /// The scorer's name as written in rubrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exact(_) => "exact",
            Self::Contains { mode: text::ContainsMode::Any, .. } => "contains_any",
            Self::Contains { texts, .. } if texts.len() == 1 => "contains",
            Self::Contains { .. } => "contains_all",
            Self::Keywords => "keywords",
            Self::Regex { .. } => "regex",
            Self::Sections { .. } => "sections",
            Self::LocationLine { .. } => "location_line",
            Self::JsonValid => "json_valid",
            Self::JsonFields(_) => "json_fields",
            Self::Length(_) => "length",
            Self::Rouge(RougeVariant::Rouge1) => "rouge1",
            Self::Rouge(RougeVariant::Rouge2) => "rouge2",
            Self::Rouge(RougeVariant::RougeL) => "rougeL",
            Self::Bleu => "bleu",
            Self::Embedding(_) => "embedding",
            Self::Perplexity => "perplexity",
            Self::Judge(_) => "judge",
        }
    }

    /// Which way the threshold points.
    pub fn direction(&self) -> Direction {
        match self {
            Self::Perplexity => Direction::LowerIsBetter,
            _ => Direction::HigherIsBetter,
        }
    }

    /// The threshold used when a check gives none: all-or-nothing scorers need 1, graded
    /// similarity scorers 0.5, perplexity 20.
    pub fn default_threshold(&self) -> f64 {
        match self {
            Self::Rouge(_) | Self::Bleu | Self::Embedding(_) | Self::Judge(_) => 0.5,
            Self::Perplexity => 20.0,
            _ => 1.0,
        }
    }

    /// The check's contribution to the case score (0–1): the value itself for bounded
    /// scorers, pass/fail for perplexity (unbounded).
    pub fn score(&self, value: f64, passed: bool) -> f64 {
        match self {
            Self::Perplexity => f64::from(u8::from(passed)),
            _ if value.is_finite() => value.clamp(0.0, 1.0),
            _ => 0.0,
        }
    }

    /// Whether the scorer needs a model (scored in batches by the run, not per text).
    pub fn needs_model(&self) -> bool {
        matches!(self, Self::Embedding(_) | Self::Perplexity | Self::Judge(_))
    }

    /// Scores `output` for `case` with a text scorer; `None` for model scorers.
    pub fn score_text(&self, case: &Case, output: &str) -> Option<Value> {
        Some(match self {
            Self::Exact(norms) => text::exact(output, &case.reference, norms),
            Self::Contains { texts, case_sensitive, mode } => text::contains(output, texts, *case_sensitive, *mode),
            Self::Keywords => text::keywords(output, &case.keywords),
            Self::Regex { regex, expect } => Value::of(f64::from(u8::from(regex.is_match(output) == *expect))),
            Self::Sections { sections, in_order, non_empty } => structure::sections(output, sections, *in_order, *non_empty),
            Self::LocationLine { prefix } => structure::location_line(output, &case.input, prefix),
            Self::JsonValid => structure::json_valid(output),
            Self::JsonFields(fields) => structure::json_fields(output, fields),
            Self::Length(bounds) => bounds.check(output),
            Self::Rouge(variant) => Value::of(rouge_variant(&case.reference, output, *variant).f1),
            Self::Bleu => Value::of(bleu::sentence_bleu(&case.reference, output) / 100.0),
            Self::Embedding(_) | Self::Perplexity | Self::Judge(_) => return None,
        })
    }
}
