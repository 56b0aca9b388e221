//! The report as one self-contained HTML file: the overview rendered by minijinja (every
//! value auto-escaped), the cases inlined as JSON for the per-case view, which builds its
//! elements with `textContent` only. A Content-Security-Policy forbids every network
//! resource. Model outputs and dataset text can therefore never become markup or script.

use minijinja::{context, AutoEscape, Environment, Value};

use super::Report;
use crate::error::{Error, Result};

/// The whole page; it includes [`OVERVIEW`].
const TEMPLATE: &str = include_str!("template.html");
/// The overview tables (runs, comparisons, loss curves): static HTML, no script.
const OVERVIEW: &str = include_str!("overview.html");
/// The overview on its own with its styles, for a notebook to show inline.
const FRAGMENT: &str = include_str!("overview_fragment.html");

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

fn environment() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_filter("num", num);
    for (name, source) in [("report.html", TEMPLATE), ("overview.html", OVERVIEW), ("fragment.html", FRAGMENT)] {
        env.add_template(name, source).map_err(|e| Error::Invalid(format!("report template {name}: {e}")))?;
    }
    Ok(env)
}

/// What the templates read; `data` (every case, as script-safe JSON) only for the whole page.
fn context(report: &Report, full_report: Option<&str>, data: Option<String>) -> Value {
    let title = report.runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" · ");
    let level = report.comparisons.first().map_or(0.95, |c| c.level);
    context! {
        title => title,
        runs => Value::from_serialize(&report.runs),
        comparisons => Value::from_serialize(&report.comparisons),
        loss_curves => Value::from_serialize(&report.loss_curves),
        reviews => Value::from_serialize(&report.reviews),
        cases_count => report.cases.len(),
        level => level,
        data => data,
        full_report => full_report,
    }
}

fn render_template(name: &str, ctx: Value) -> Result<String> {
    environment()?.get_template(name).and_then(|t| t.render(ctx)).map_err(|e| Error::Invalid(format!("rendering the report: {e}")))
}

/// Renders `report` as one HTML page.
pub fn render(report: &Report) -> Result<String> {
    let data = script_json(&serde_json::json!({ "runs": report.runs, "cases": report.cases }));
    render_template("report.html", context(report, None, Some(data)))
}

/// Renders the overview alone (no script; what a notebook shows inline), naming
/// `full_report` when given.
pub fn render_overview(report: &Report, full_report: Option<&str>) -> Result<String> {
    render_template("fragment.html", context(report, full_report, None))
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
