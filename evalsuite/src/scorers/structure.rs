//! Structure scorers: required sections in order, a cited code line that must exist in the
//! case's input, JSON validity and typed JSON fields. The functions compute values; the
//! structs are the registered [`Scorer`]s with their rubric parameters.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{each, params, Item, ScoreContext, Scorer, Value};
use crate::error::Result;
use crate::excerpt::truncate;

/// Where each required section starts: (line index, text after the header on that line).
fn find_sections<'a>(lines: &[&'a str], sections: &[String], in_order: bool) -> Vec<Option<(usize, &'a str)>> {
    let mut from = 0;
    sections
        .iter()
        .map(|header| {
            let start = if in_order { from } else { 0 };
            let found = lines.iter().enumerate().skip(start).find_map(|(i, l)| l.trim_start().strip_prefix(header.as_str()).map(|rest| (i, rest)));
            if let Some((i, _)) = found {
                from = i + 1;
            }
            found
        })
        .collect()
}

/// Fraction of `sections` present as line-starting headers (in order, and with some text
/// on the header line or before the next section, when asked).
pub fn sections(output: &str, sections: &[String], in_order: bool, non_empty: bool) -> Value {
    let lines: Vec<&str> = output.lines().collect();
    let found = find_sections(&lines, sections, in_order);
    let starts: Vec<usize> = found.iter().flatten().map(|(i, _)| *i).collect();
    let mut problems = Vec::new();
    let mut ok = 0;
    for (header, at) in sections.iter().zip(&found) {
        let Some((i, rest)) = at else {
            problems.push(format!("{header} missing{}", if in_order { " or out of order" } else { "" }));
            continue;
        };
        if non_empty {
            let next = starts.iter().copied().filter(|&s| s > *i).min().unwrap_or(lines.len());
            let body_empty = rest.trim().is_empty() && lines[i + 1..next].iter().all(|l| l.trim().is_empty());
            if body_empty {
                problems.push(format!("{header} empty"));
                continue;
            }
        }
        ok += 1;
    }
    Value::with(ok as f64 / sections.len() as f64, problems.join("; "))
}

/// 1 when the line after `prefix` cites a line of `input` that exists: `line N: text` needs
/// line N (1-based) to equal `text` (both trimmed, surrounding backticks or quotes allowed
/// around the citation); `line N` alone needs N in range; bare `text` needs some input line
/// equal to it.
pub fn location_line(output: &str, input: &str, prefix: &str) -> Value {
    let Some(cited) = output.lines().find_map(|l| l.trim_start().strip_prefix(prefix)).map(str::trim) else {
        return Value::with(0.0, format!("no `{prefix}` line"));
    };
    let input_lines: Vec<&str> = input.lines().collect();
    let (number, text) = parse_citation(cited);
    // The citation as written, or without wrapping quotes (a Go import line really starts
    // with a quote, so both readings are tried).
    let matches = |line: &str, t: &str| line.trim() == t || line.trim() == unquote(t);
    match (number, text.filter(|t| !t.is_empty())) {
        (Some(n), _) if n == 0 || n > input_lines.len() => Value::with(0.0, format!("cites line {n}, the input has {} lines", input_lines.len())),
        (Some(n), Some(t)) if matches(input_lines[n - 1], t) => Value::of(1.0),
        (Some(n), Some(t)) => Value::with(0.0, format!("line {n} is {:?}, not {:?}", truncate(input_lines[n - 1].trim(), 60), truncate(t, 60))),
        (Some(_), None) => Value::of(1.0),
        (None, Some(t)) if input_lines.iter().any(|l| matches(l, t)) => Value::of(1.0),
        (None, Some(t)) => Value::with(0.0, format!("{:?} is not a line of the input", truncate(t, 60))),
        (None, None) => Value::with(0.0, format!("empty `{prefix}` line")),
    }
}

/// Splits `line 12: foo()` / `Line 12 - foo()` / `L12: foo()` into (12, "foo()").
fn parse_citation(cited: &str) -> (Option<usize>, Option<&str>) {
    let lower = cited.to_ascii_lowercase();
    let after = ["line ", "line", "l"].iter().find_map(|p| lower.starts_with(p).then_some(p.len()));
    if let Some(skip) = after {
        let rest = &cited[skip..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let n = rest[..digits].parse().ok();
            let tail = rest[digits..].trim_start_matches([':', '-', ',', ' ', '\t', '—']).trim();
            return (n, (!tail.is_empty()).then_some(tail));
        }
    }
    (None, Some(cited))
}

fn unquote(t: &str) -> &str {
    for q in ['`', '"', '\''] {
        if let Some(inner) = t.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            if !inner.is_empty() {
                return inner.trim();
            }
        }
    }
    t
}

/// The JSON text in an output: the content of a fenced ```json block if there is one,
/// else the whole output.
fn json_text(output: &str) -> &str {
    if let Some(start) = output.find("```") {
        let after = &output[start + 3..];
        let after = after.strip_prefix("json").or_else(|| after.strip_prefix("JSON")).unwrap_or(after);
        if let Some(end) = after.find("```") {
            return after[..end].trim();
        }
    }
    output.trim()
}

/// 1 when the output (or its fenced block) is valid JSON.
pub fn json_valid(output: &str) -> Value {
    match serde_json::from_str::<serde_json::Value>(json_text(output)) {
        Ok(_) => Value::of(1.0),
        Err(e) => Value::with(0.0, format!("invalid JSON: {e}")),
    }
}

/// A JSON value type a field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonType {
    /// A string.
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// true or false.
    Boolean,
    /// An array.
    Array,
    /// An object.
    Object,
    /// Any value, even null.
    Any,
}

impl JsonType {
    fn accepts(self, v: &serde_json::Value) -> bool {
        match self {
            Self::String => v.is_string(),
            Self::Number => v.is_number(),
            Self::Integer => v.is_i64() || v.is_u64(),
            Self::Boolean => v.is_boolean(),
            Self::Array => v.is_array(),
            Self::Object => v.is_object(),
            Self::Any => true,
        }
    }
}

/// Fraction of `fields` present in the output's JSON object with the right type.
pub fn json_fields(output: &str, fields: &BTreeMap<String, JsonType>) -> Value {
    let obj = match serde_json::from_str::<serde_json::Value>(json_text(output)) {
        Ok(serde_json::Value::Object(o)) => o,
        Ok(_) => return Value::with(0.0, "JSON is not an object"),
        Err(e) => return Value::with(0.0, format!("invalid JSON: {e}")),
    };
    let bad: Vec<String> = fields
        .iter()
        .filter_map(|(name, ty)| match obj.get(name) {
            None => Some(format!("{name} missing")),
            Some(v) if !ty.accepts(v) => Some(format!("{name} not {ty:?}")),
            Some(_) => None,
        })
        .collect();
    Value::with((fields.len() - bad.len()) as f64 / fields.len() as f64, bad.join("; "))
}

fn yes() -> bool {
    true
}

/// `sections`: required section headers, in order and non-empty (by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sections {
    /// Section headers, as they appear in the output.
    pub sections: Vec<String>,
    /// Whether they must appear in this order.
    #[serde(default = "yes")]
    pub in_order: bool,
    /// Whether each section must have content.
    #[serde(default = "yes")]
    pub non_empty: bool,
}

impl Sections {
    /// From a rubric check's parameters.
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let s: Self = params(table)?;
        if s.sections.is_empty() {
            return Err("`sections` is empty".into());
        }
        Ok(Arc::new(s))
    }
}

impl Scorer for Sections {
    fn kind(&self) -> &'static str {
        "sections"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| sections(it.output, &self.sections, self.in_order, self.non_empty))
    }
}

/// `location_line`: the line cited after `prefix` (`line N: text`) exists in the case's
/// `field` (the record's `input` by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationLine {
    /// The text that introduces the cited location.
    #[serde(default = "location_prefix")]
    pub prefix: String,
    /// The case field holding the text whose lines are cited.
    #[serde(default = "input_field")]
    pub field: String,
}

fn location_prefix() -> String {
    "Location:".into()
}

fn input_field() -> String {
    "input".into()
}

impl LocationLine {
    /// From a rubric check's parameters.
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for LocationLine {
    fn kind(&self) -> &'static str {
        "location_line"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| match it.case.fields.get(&self.field) {
            Some(text) => location_line(it.output, text, &self.prefix),
            // A misspelt `field` in the rubric, or a case without the text: nothing to cite.
            None => Value::failed(format!("the case has no field {:?} (the text whose lines are cited)", self.field)),
        })
    }
}

/// `json_valid`: the output (or its fenced json block) parses as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonValid {}

impl JsonValid {
    /// From a rubric check's parameters (none).
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for JsonValid {
    fn kind(&self) -> &'static str {
        "json_valid"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| json_valid(it.output))
    }
}

/// `json_fields`: the output's JSON object has these fields with these types.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFields {
    /// Field name → expected JSON type.
    pub fields: BTreeMap<String, JsonType>,
}

impl JsonFields {
    /// From a rubric check's parameters.
    pub fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        let s: Self = params(table)?;
        if s.fields.is_empty() {
            return Err("`fields` is empty".into());
        }
        Ok(Arc::new(s))
    }
}

impl Scorer for JsonFields {
    fn kind(&self) -> &'static str {
        "json_fields"
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> Result<Vec<Value>> {
        each(items, |it| json_fields(it.output, &self.fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Vulnerability: SQL injection\nRisk: High — attacker reads the DB\nLocation: line 2: q = \"SELECT \" + name\nFix: use parameters";
    const INPUT: &str = "def f(name):\n    q = \"SELECT \" + name\n    return db.run(q)";

    fn heads() -> Vec<String> {
        ["Vulnerability:", "Risk:", "Location:", "Fix:"].map(String::from).to_vec()
    }

    #[test]
    fn sections_in_order_and_non_empty() {
        assert_eq!(sections(REPORT, &heads(), true, true).value, 1.0);
        let swapped = "Risk: High\nVulnerability: x\nLocation: line 1\nFix: y";
        assert_eq!(sections(swapped, &heads(), true, true).value, 0.75);
        assert_eq!(sections(swapped, &heads(), false, true).value, 1.0);
        let empty = "Vulnerability:\nRisk: High\nLocation: line 1\nFix: y";
        let v = sections(empty, &heads(), true, true);
        assert_eq!(v.value, 0.75);
        assert!(v.detail.contains("Vulnerability: empty"));
        let multiline = "Vulnerability:\n  SQL injection\nRisk: High\nLocation: l\nFix: y";
        assert_eq!(sections(multiline, &heads(), true, true).value, 1.0);
    }

    #[test]
    fn location_must_exist_in_the_input() {
        assert_eq!(location_line(REPORT, INPUT, "Location:").value, 1.0);
        let wrong_line = REPORT.replace("line 2:", "line 3:");
        assert_eq!(location_line(&wrong_line, INPUT, "Location:").value, 0.0);
        let out_of_range = REPORT.replace("line 2:", "line 9:");
        assert!(location_line(&out_of_range, INPUT, "Location:").detail.contains("has 3 lines"));
        assert_eq!(location_line("Location: `return db.run(q)`", INPUT, "Location:").value, 1.0);
        assert_eq!(location_line("no location", INPUT, "Location:").value, 0.0);
    }

    #[test]
    fn json_checks() {
        assert_eq!(json_valid("```json\n{\"a\": 1}\n```").value, 1.0);
        assert_eq!(json_valid("{a: 1}").value, 0.0);
        let fields: BTreeMap<String, JsonType> = [("a".into(), JsonType::Integer), ("b".into(), JsonType::String)].into();
        assert_eq!(json_fields("{\"a\": 1, \"b\": 2}", &fields).value, 0.5);
    }
}
