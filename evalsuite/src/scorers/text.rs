//! Plain-text scorers: exact match with normalization, containment, keywords, regular
//! expressions and length. The functions compute values; the structs are the registered
//! [`Scorer`]s with their rubric parameters.

use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;

use super::{each, params, Item, ScoreContext, Scorer, Value};
use crate::error::Result;
use crate::excerpt::truncate;

/// Text normalizations applied before exact matching (SQuAD-style when all are on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Lower-case everything.
    Lowercase,
    /// Collapse runs of whitespace and trim.
    Whitespace,
    /// Drop punctuation characters.
    Punctuation,
    /// Drop the English articles a, an, the.
    Articles,
}

/// All normalizations (the default for `exact`).
pub fn all_normalizations() -> Vec<Normalization> {
    vec![Normalization::Lowercase, Normalization::Punctuation, Normalization::Articles, Normalization::Whitespace]
}

/// Applies `norms` to `text`.
pub fn normalize(text: &str, norms: &[Normalization]) -> String {
    let has = |n| norms.contains(&n);
    let mut s = if has(Normalization::Lowercase) { text.to_lowercase() } else { text.to_string() };
    if has(Normalization::Punctuation) {
        s.retain(|c| !c.is_ascii_punctuation() && !is_unicode_punctuation(c));
    }
    if has(Normalization::Articles) {
        s = s.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the" | "A" | "An" | "The")).collect::<Vec<_>>().join(" ");
    }
    if has(Normalization::Whitespace) {
        s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    s
}

fn is_unicode_punctuation(c: char) -> bool {
    matches!(c, '。' | '，' | '、' | '；' | '：' | '？' | '！' | '“' | '”' | '‘' | '’' | '（' | '）' | '《' | '》' | '—' | '…' | '·')
}

/// 1 when output and reference are equal after normalizing both.
pub fn exact(output: &str, reference: &str, norms: &[Normalization]) -> Value {
    let (a, b) = (normalize(output, norms), normalize(reference, norms));
    if a == b {
        Value::of(1.0)
    } else {
        Value::with(0.0, format!("expected {:?}", truncate(&b, 80)))
    }
}

/// How many of several needles must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainsMode {
    /// Value is the fraction present (1 only when all are).
    All,
    /// Value is 1 when any is present.
    Any,
}

/// Containment of `needles` (already lower-cased unless `case_sensitive`).
pub fn contains(output: &str, needles: &[String], case_sensitive: bool, mode: ContainsMode) -> Value {
    let hay = if case_sensitive { output.to_string() } else { output.to_lowercase() };
    let missing: Vec<&str> = needles.iter().filter(|n| !hay.contains(n.as_str())).map(String::as_str).collect();
    let found = needles.len() - missing.len();
    match mode {
        ContainsMode::Any if found > 0 => Value::of(1.0),
        ContainsMode::Any => Value::with(0.0, format!("none of {needles:?}")),
        ContainsMode::All if missing.is_empty() => Value::of(1.0),
        ContainsMode::All => Value::with(found as f64 / needles.len() as f64, format!("missing {missing:?}")),
    }
}

/// Fraction of `keywords` present, case-insensitively; `a|b` accepts either alternative.
/// A case without keywords has no value (an error state, not a free 1 or a 0).
pub fn keywords(output: &str, keywords: &[String]) -> Value {
    if keywords.is_empty() {
        return Value::failed("the case has no keywords; give it a `keywords` list or score it with a rubric without this check");
    }
    let hay = output.to_lowercase();
    let missing: Vec<&str> =
        keywords.iter().filter(|k| !k.split('|').any(|alt| !alt.trim().is_empty() && hay.contains(&alt.trim().to_lowercase()))).map(String::as_str).collect();
    let value = (keywords.len() - missing.len()) as f64 / keywords.len() as f64;
    if missing.is_empty() {
        Value::of(value)
    } else {
        Value::with(value, format!("missing {missing:?}"))
    }
}

/// Length bounds in characters and whitespace-separated words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LengthBounds {
    /// Fewest characters.
    pub min_chars: Option<usize>,
    /// Most characters.
    pub max_chars: Option<usize>,
    /// Fewest words.
    pub min_words: Option<usize>,
    /// Most words.
    pub max_words: Option<usize>,
}

impl LengthBounds {
    /// Rejects bounds that no text can meet.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_chars.is_none() && self.max_chars.is_none() && self.min_words.is_none() && self.max_words.is_none() {
            return Err("give at least one of min_chars, max_chars, min_words, max_words".into());
        }
        for (lo, hi, what) in [(self.min_chars, self.max_chars, "chars"), (self.min_words, self.max_words, "words")] {
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if lo > hi {
                    return Err(format!("min_{what} ({lo}) > max_{what} ({hi})"));
                }
            }
        }
        Ok(())
    }

    /// 1 inside the bounds, else 0 with the measured length.
    pub fn check(&self, output: &str) -> Value {
        let chars = output.trim().chars().count();
        let words = output.split_whitespace().count();
        let out_of = |x: usize, lo: Option<usize>, hi: Option<usize>| lo.is_some_and(|lo| x < lo) || hi.is_some_and(|hi| x > hi);
        if out_of(chars, self.min_chars, self.max_chars) || out_of(words, self.min_words, self.max_words) {
            Value::with(0.0, format!("{chars} chars, {words} words"))
        } else {
            Value::of(1.0)
        }
    }
}

/// `exact`: output equals the reference after normalization.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exact {
    /// Normalizations applied to both texts before comparing.
    #[serde(default = "all_normalizations")]
    pub normalize: Vec<Normalization>,
}

impl Exact {
    /// From a rubric check's parameters.
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for Exact {
    fn kind(&self) -> &'static str {
        "exact"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| exact(it.output, &it.case.reference, &self.normalize))
    }
}

/// `contains`, `contains_all`, `contains_any`: the output contains one text, the fraction
/// of several, or any of several.
#[derive(Debug, Clone)]
pub struct Contains {
    kind: &'static str,
    /// The texts (lower-cased unless case-sensitive).
    texts: Vec<String>,
    case_sensitive: bool,
    mode: ContainsMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneText {
    text: String,
    #[serde(default)]
    case_sensitive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Texts {
    texts: Vec<String>,
    #[serde(default)]
    case_sensitive: bool,
}

impl Contains {
    fn checked(kind: &'static str, texts: Vec<String>, case_sensitive: bool, mode: ContainsMode) -> Result<Arc<dyn Scorer>, String> {
        if texts.is_empty() {
            return Err("`texts` is empty".into());
        }
        if texts.iter().any(|t| t.is_empty()) {
            return Err("an empty text is in every output; give non-empty texts".into());
        }
        let texts = if case_sensitive { texts } else { texts.into_iter().map(|t| t.to_lowercase()).collect() };
        Ok(Arc::new(Self { kind, texts, case_sensitive, mode }))
    }

    /// `contains` from its parameters (`text`, `case_sensitive`).
    pub fn build_one(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let p: OneText = params(table)?;
        Self::checked("contains", vec![p.text], p.case_sensitive, ContainsMode::All)
    }

    /// `contains_all` from its parameters (`texts`, `case_sensitive`).
    pub fn build_all(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let p: Texts = params(table)?;
        Self::checked("contains_all", p.texts, p.case_sensitive, ContainsMode::All)
    }

    /// `contains_any` from its parameters (`texts`, `case_sensitive`).
    pub fn build_any(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let p: Texts = params(table)?;
        Self::checked("contains_any", p.texts, p.case_sensitive, ContainsMode::Any)
    }
}

impl Scorer for Contains {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| contains(it.output, &self.texts, self.case_sensitive, self.mode))
    }
}

/// `keywords`: the fraction of the case's `keywords` present (`a|b` = either).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keywords {}

impl Keywords {
    /// From a rubric check's parameters (none).
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for Keywords {
    fn kind(&self) -> &'static str {
        "keywords"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| keywords(it.output, &it.case.keywords))
    }
}

/// `regex`: the output matches (`expect = true`, the default) or does not match a pattern.
#[derive(Debug, Clone)]
pub struct RegexMatch {
    regex: Regex,
    expect: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexParams {
    pattern: String,
    #[serde(default = "yes")]
    expect: bool,
}

fn yes() -> bool {
    true
}

impl RegexMatch {
    /// From a rubric check's parameters (`pattern`, `expect`).
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let p: RegexParams = params(table)?;
        let regex = Regex::new(&p.pattern).map_err(|e| format!("bad regex: {e}"))?;
        Ok(Arc::new(Self { regex, expect: p.expect }))
    }
}

impl Scorer for RegexMatch {
    fn kind(&self) -> &'static str {
        "regex"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| Value::of(f64::from(u8::from(self.regex.is_match(it.output) == self.expect))))
    }
}

/// `length`: output length within bounds.
#[derive(Debug, Clone)]
pub struct Length(LengthBounds);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LengthParams {
    min_chars: Option<usize>,
    max_chars: Option<usize>,
    min_words: Option<usize>,
    max_words: Option<usize>,
}

impl Length {
    /// From a rubric check's parameters (`min_chars`, `max_chars`, `min_words`, `max_words`).
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let LengthParams { min_chars, max_chars, min_words, max_words } = params(table)?;
        let bounds = LengthBounds { min_chars, max_chars, min_words, max_words };
        bounds.validate()?;
        Ok(Arc::new(Self(bounds)))
    }
}

impl Scorer for Length {
    fn kind(&self) -> &'static str {
        "length"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| self.0.check(it.output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_style_normalization() {
        assert_eq!(normalize("  The Cat,  sat!  ", &all_normalizations()), "cat sat");
        assert_eq!(exact("The answer is 42.", "answer is 42", &all_normalizations()).value, 1.0);
        assert_eq!(exact("42", "43", &all_normalizations()).value, 0.0);
    }

    #[test]
    fn contains_and_keywords() {
        let needles = vec!["light".to_string(), "sugar".to_string()];
        assert_eq!(contains("Light makes SUGAR", &needles, false, ContainsMode::All).value, 1.0);
        assert_eq!(contains("light only", &needles, false, ContainsMode::All).value, 0.5);
        assert_eq!(contains("light only", &needles, false, ContainsMode::Any).value, 1.0);
        let kw = vec!["80 km/h|80 kilometers".to_string(), "二氧化碳|CO2".to_string()];
        assert_eq!(keywords("It goes 80 kilometers per hour and makes co2", &kw).value, 1.0);
        assert_eq!(keywords("消耗二氧化碳", &kw).value, 0.5);
        let none = keywords("anything", &[]);
        assert!(none.value.is_nan() && none.detail.contains("no keywords"), "a case without keywords has no value: {none:?}");
    }

    #[test]
    fn length_bounds() {
        let b = LengthBounds { min_chars: Some(2), max_chars: Some(5), ..Default::default() };
        assert_eq!(b.check("abc").value, 1.0);
        assert_eq!(b.check("abcdef").value, 0.0);
        assert!(LengthBounds { min_words: Some(3), max_words: Some(1), ..Default::default() }.validate().is_err());
    }
}
