//! The report's overview as Markdown, for pull-request comments.

use std::fmt::Write as _;

use super::Report;

/// Table cell text: HTML is inert, and pipes and line breaks cannot break the table.
fn cell(s: &str) -> String {
    tunelab::display::escape_html(s).replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The overview: per comparison, each category's figures and verdict, forgetting,
/// memorization and flags.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.comparisons {
        let _ = writeln!(out, "## {} vs {} (baseline)\n", cell(&c.candidate.name), cell(&c.baseline.name));
        let _ = writeln!(out, "{} vs {}\n", cell(&c.candidate.evaluated), cell(&c.baseline.evaluated));
        out.push_str("| category | n | baseline | candidate | Δ [95% CI] | verdict | detectable Δ | pass rate (baseline → candidate) | pass→fail / fail→pass | McNemar p (Holm) |\n");
        out.push_str("|---|---:|---:|---:|---|---|---:|---|---|---:|\n");
        for k in &c.categories {
            let s = &k.score;
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:+.3} [{:+.3}, {:+.3}] | **{}** | {:.3} | {:.0}% → {:.0}% | {} / {} | {:.3} |",
                cell(&k.category),
                k.n,
                s.baseline,
                s.candidate,
                s.diff,
                s.bootstrap.0,
                s.bootstrap.1,
                k.verdict.label(),
                s.detectable_effect,
                100.0 * k.baseline_pass.rate,
                100.0 * k.candidate_pass.rate,
                k.flips.pass_to_fail,
                k.flips.fail_to_pass,
                k.mcnemar_p_holm
            );
        }
        let forgetting: Vec<String> =
            c.forgetting().iter().map(|(cat, d)| format!("{cat} {:+.3} [{:+.3}, {:+.3}]", d.diff, d.bootstrap.0, d.bootstrap.1)).collect();
        if !forgetting.is_empty() {
            let _ = writeln!(out, "\n**Forgetting** (candidate − baseline): {}", forgetting.join(", "));
        }
        let gap = |g: Option<f64>| g.map_or("n/a".to_string(), |g| format!("{g:+.3}"));
        let _ = writeln!(out, "\n**Memorization gap** (seen − held-out): baseline {}, candidate {}", gap(c.memorization_gap.0), gap(c.memorization_gap.1));
        for f in &c.flags {
            let _ = writeln!(out, "\n> ⚠ {}", cell(&f.message));
        }
        out.push('\n');
    }
    for r in &report.reviews {
        let _ = writeln!(out, "## Blind review: {}\n\n```\n{}```\n", cell(&r.study), crate::review::results::render_text(r));
    }
    out
}
