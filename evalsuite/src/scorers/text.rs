//! Plain-text scorers: exact match with normalization, containment, keywords and length.

use serde::Deserialize;

use super::Value;

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
/// A case without keywords scores 1 (nothing required).
pub fn keywords(output: &str, keywords: &[String]) -> Value {
    if keywords.is_empty() {
        return Value::with(1.0, "no keywords");
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

/// The first `n` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
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
    }

    #[test]
    fn length_bounds() {
        let b = LengthBounds { min_chars: Some(2), max_chars: Some(5), ..Default::default() };
        assert_eq!(b.check("abc").value, 1.0);
        assert_eq!(b.check("abcdef").value, 0.0);
        assert!(LengthBounds { min_words: Some(3), max_words: Some(1), ..Default::default() }.validate().is_err());
    }
}
