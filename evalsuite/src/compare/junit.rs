//! The gate's decision as JUnit XML, for CI systems that show test reports (GitLab,
//! Jenkins): one `testsuite` per category (rules without one under `all`), one `testcase`
//! per rule, `failure` for a broken rule, `error` for a data problem, `skipped` for an
//! optional rule that did not apply, and the category's statistics as `properties`.

use std::fmt::Write as _;

use super::gate::{Decision, Status};
use super::Comparison;

/// Escapes text for XML attributes and content: the characters XML 1.0 forbids are
/// dropped, and the markup characters escaped as for HTML (the same five entities).
pub fn escape_xml(s: &str) -> String {
    let allowed: String = s.chars().filter(|&c| matches!(c, '\t' | '\n' | '\r') || !((c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}')).collect();
    tunelab::display::escape_html(&allowed)
}

/// The JUnit XML document for `decision` on `comparison`.
pub fn render(comparison: &Comparison, decision: &Decision) -> String {
    let mut suites: Vec<String> = Vec::new();
    for o in &decision.outcomes {
        let name = o.category.clone().unwrap_or_else(|| "all".into());
        if !suites.contains(&name) {
            suites.push(name);
        }
    }
    let count = |s: Status| decision.outcomes.iter().filter(|o| o.status == s).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"tunelab gate: {} vs {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
        escape_xml(&comparison.candidate.name),
        escape_xml(&comparison.baseline.name),
        decision.outcomes.len(),
        count(Status::Fail),
        count(Status::Error)
    );
    for (id, suite) in suites.iter().enumerate() {
        let cases: Vec<_> = decision.outcomes.iter().filter(|o| o.category.as_deref().unwrap_or("all") == suite).collect();
        let n = |s: Status| cases.iter().filter(|o| o.status == s).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" id=\"{id}\" package=\"tunelab.gate\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"0\" timestamp=\"{}\" hostname=\"localhost\">",
            escape_xml(suite),
            cases.len(),
            n(Status::Fail),
            n(Status::Error),
            n(Status::Skipped),
            escape_xml(timestamp(&comparison.candidate.started_at)),
        );
        if let Some(c) = comparison.category(suite) {
            xml.push_str("    <properties>\n");
            let props = [
                ("n", c.n.to_string()),
                ("baseline_mean", format!("{:.6}", c.score.baseline)),
                ("candidate_mean", format!("{:.6}", c.score.candidate)),
                ("diff", format!("{:.6}", c.score.diff)),
                ("ci_low", format!("{:.6}", c.score.bootstrap.0)),
                ("ci_high", format!("{:.6}", c.score.bootstrap.1)),
                ("detectable_effect", format!("{:.6}", c.score.detectable_effect)),
                ("pass_to_fail", c.flips.pass_to_fail.to_string()),
                ("fail_to_pass", c.flips.fail_to_pass.to_string()),
                ("mcnemar_p_holm", format!("{:.6}", c.mcnemar_p_holm)),
                ("verdict", c.verdict.label().to_string()),
            ];
            for (k, v) in props {
                let _ = writeln!(xml, "      <property name=\"{k}\" value=\"{}\"/>", escape_xml(&v));
            }
            xml.push_str("    </properties>\n");
        } else {
            xml.push_str("    <properties/>\n");
        }
        for o in cases {
            let _ = write!(xml, "    <testcase name=\"{}\" classname=\"tunelab.gate.{}\" time=\"0\"", escape_xml(&o.rule), escape_xml(suite));
            let body = |tag: &str| format!("      <{tag} message=\"{}\" type=\"{tag}\">{}</{tag}>\n", escape_xml(&o.figure), escape_xml(&o.figure));
            match o.status {
                Status::Pass => xml.push_str("/>\n"),
                Status::Fail => xml.push_str(&format!(">\n{}    </testcase>\n", body("failure"))),
                Status::Error => xml.push_str(&format!(">\n{}    </testcase>\n", body("error"))),
                Status::Skipped => xml.push_str(&format!(">\n      <skipped message=\"{}\"/>\n    </testcase>\n", escape_xml(&o.figure))),
            }
        }
        xml.push_str("    <system-out/>\n    <system-err/>\n  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The JUnit XML document for a gate that could not compare the runs at all (a run or the
/// policy unreadable): one `error` test case carrying `message`, so CI shows the data
/// problem instead of an earlier report left at the same path.
pub fn render_error(message: &str) -> String {
    let message = escape_xml(message);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"tunelab gate\" tests=\"1\" failures=\"0\" errors=\"1\">\n  \
         <testsuite name=\"all\" id=\"0\" package=\"tunelab.gate\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0\" timestamp=\"1970-01-01T00:00:00\" hostname=\"localhost\">\n    \
         <properties/>\n    <testcase name=\"runs are readable\" classname=\"tunelab.gate.all\" time=\"0\">\n      \
         <error message=\"{message}\" type=\"error\">{message}</error>\n    </testcase>\n    <system-out/>\n    <system-err/>\n  </testsuite>\n</testsuites>\n"
    )
}

/// `YYYY-MM-DDTHH:MM:SS` (the XSD's timestamp: no zone) from an RFC 3339 time.
fn timestamp(rfc3339: &str) -> &str {
    rfc3339.get(..19).filter(|t| t.len() == 19).unwrap_or("1970-01-01T00:00:00")
}
