//! The report as one self-contained HTML file: the overview rendered by minijinja (every
//! value auto-escaped), the cases inlined as JSON for the per-case view, which builds its
//! elements with `textContent` only. A Content-Security-Policy forbids every network
//! resource. Model outputs and dataset text can therefore never become markup or script.

use minijinja::{context, AutoEscape, Environment, Value};

use super::Report;
use crate::error::{Error, Result};

const TEMPLATE: &str = include_str!("template.html");

/// JSON safe inside `<script type="application/json">`: `<`, `>` and `&` are escaped (so
/// no `</script>` or `<!--` can appear), and so are U+2028 and U+2029.
pub fn script_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).expect("report data serialises");
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026").replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029")
}

/// A number with a format spec like `.3` or `+.3`; NaN shows as `n/a`.
fn num(value: f64, spec: &str) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    let sign = spec.starts_with('+');
    let precision: usize = spec.trim_start_matches('+').trim_start_matches('.').parse().unwrap_or(3);
    if sign {
        format!("{value:+.precision$}")
    } else {
        format!("{value:.precision$}")
    }
}

/// Renders `report` as HTML.
pub fn render(report: &Report) -> Result<String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_filter("num", num);
    env.add_template("report.html", TEMPLATE).map_err(|e| Error::Invalid(format!("report template: {e}")))?;
    let data = script_json(&serde_json::json!({ "runs": report.runs, "cases": report.cases }));
    let title = report.runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" · ");
    let level = report.comparisons.first().map_or(0.95, |c| c.level);
    let ctx = context! {
        title => title,
        runs => Value::from_serialize(&report.runs),
        comparisons => Value::from_serialize(&report.comparisons),
        loss_curves => Value::from_serialize(&report.loss_curves),
        cases_count => report.cases.len(),
        level => level,
        data => data,
    };
    env.get_template("report.html").and_then(|t| t.render(ctx)).map_err(|e| Error::Invalid(format!("rendering the report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_its_script() {
        let s = script_json(&serde_json::json!({"o": "</script><script>alert(1)</script><!-- \u{2028}"}));
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('\u{2028}'), "{s}");
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["o"], "</script><script>alert(1)</script><!-- \u{2028}");
    }

    #[test]
    fn numbers_format_with_sign_and_precision() {
        assert_eq!(num(0.12345, ".3"), "0.123");
        assert_eq!(num(0.12345, "+.2"), "+0.12");
        assert_eq!(num(f64::NAN, ".3"), "n/a");
    }
}
