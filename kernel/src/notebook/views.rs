//! Rich views of tunelab's types for notebooks. evcxr shows a value's HTML when the type has
//! an `evcxr_display` method that prints `EVCXR_BEGIN_CONTENT mime … EVCXR_END_CONTENT`.

use super::markers;
use crate::data::{Dataset, Severity, ValidationReport};
use crate::display::escape_html;
use crate::train::{loss_chart, TrainOutcome, TrainStatus};

/// Prints a rich view; dataset and model text inside it cannot end the block early.
fn emit(html: &str, text: &str) {
    let (html, text) = (markers::neutralize_html(html), markers::neutralize_text(text));
    println!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT");
    println!("EVCXR_BEGIN_CONTENT text/plain\n{text}\nEVCXR_END_CONTENT");
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

const TABLE: &str = "<table style=\"border-collapse:collapse;font-size:12px\">";
const TD: &str = "<td style=\"border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left;white-space:pre-wrap\">";

impl Dataset {
    /// Notebook view: the first ten examples as a table.
    pub fn evcxr_display(&self) {
        let mut html = format!(
            "<div><b>{}</b>: {} examples, {} unreadable records</div>{TABLE}<tr><th>line</th><th>prompt</th><th>response</th></tr>",
            escape_html(&self.path.display().to_string()),
            self.len(),
            self.issues.len()
        );
        for ex in self.examples.iter().take(10) {
            html.push_str(&format!(
                "<tr>{TD}{}</td>{TD}{}</td>{TD}{}</td></tr>",
                ex.source.line,
                escape_html(&clip(&ex.prompt_text(), 300)),
                escape_html(&clip(ex.response_text(), 300))
            ));
        }
        html.push_str("</table>");
        emit(&html, &format!("{}: {} examples", self.path.display(), self.len()));
    }
}

impl ValidationReport {
    /// Notebook view: summary, token statistics and every issue.
    pub fn evcxr_display(&self) {
        let mut html = format!(
            "<div><b>{}</b>: {} records, {} valid · {} errors, {} warnings · duplicates {} exact / {} near · eval overlap {} · over cutoff {}</div>",
            escape_html(&self.file),
            self.records,
            self.valid,
            self.error_count(),
            self.warning_count(),
            self.exact_duplicates,
            self.near_duplicates,
            self.eval_overlap,
            self.over_cutoff
        );
        html.push_str(&format!("{TABLE}<tr><th>tokens</th><th>min</th><th>mean</th><th>p50</th><th>p95</th><th>max</th></tr>"));
        for (name, s) in [("prompt", &self.prompt_tokens), ("response", &self.response_tokens)] {
            if let Some(s) = s {
                html.push_str(&format!(
                    "<tr>{TD}{name}</td>{TD}{}</td>{TD}{:.0}</td>{TD}{}</td>{TD}{}</td>{TD}{}</td></tr>",
                    s.min, s.mean, s.p50, s.p95, s.max
                ));
            }
        }
        html.push_str("</table>");
        if !self.issues.is_empty() {
            html.push_str(&format!("{TABLE}<tr><th>where</th><th>severity</th><th>field</th><th>problem</th></tr>"));
            for i in &self.issues {
                let sev = if i.severity == Severity::Error { "error" } else { "warning" };
                html.push_str(&format!(
                    "<tr>{TD}{}</td>{TD}{sev}</td>{TD}{}</td>{TD}{}</td></tr>",
                    escape_html(&i.source.to_string()),
                    escape_html(i.field.as_deref().unwrap_or("")),
                    escape_html(&i.message)
                ));
            }
            html.push_str("</table>");
        }
        emit(&html, &self.render_text());
    }
}

impl TrainOutcome {
    /// Notebook view: status, loss summary and the loss chart.
    pub fn evcxr_display(&self) {
        let losses = self.losses();
        let evals = self.eval_losses();
        let status = match &self.status {
            TrainStatus::Completed => "completed".to_string(),
            TrainStatus::Interrupted { checkpoint } => format!("interrupted (checkpoint {})", checkpoint.display()),
        };
        let summary = format!(
            "{status}: {} steps; loss {} → {}; held-out loss {}; adapter in {}",
            self.steps,
            losses.first().map_or("-".into(), |l| format!("{:.4}", l.1)),
            losses.last().map_or("-".into(), |l| format!("{:.4}", l.1)),
            evals.last().map_or("-".into(), |l| format!("{:.4}", l.1)),
            self.out_dir.display()
        );
        emit(&format!("<div>{}</div>{}", escape_html(&summary), loss_chart(&self.history).to_svg(560.0, 300.0)), &summary);
    }
}

/// Generations of several models (base, adapters) for the same prompts.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Column titles (e.g. "base", "adapter").
    pub columns: Vec<String>,
    /// Each row: a label (e.g. the test kind), the prompt, and one output per column.
    pub rows: Vec<(String, String, Vec<String>)>,
}

impl Comparison {
    /// Rows where the outputs differ between columns.
    pub fn differing(&self) -> Vec<&(String, String, Vec<String>)> {
        self.rows.iter().filter(|(_, _, outs)| outs.windows(2).any(|w| w[0].trim() != w[1].trim())).collect()
    }

    /// Notebook view: a side-by-side table (outputs escaped), differing rows marked.
    pub fn evcxr_display(&self) {
        let mut html = format!("{TABLE}<tr><th>kind</th><th>prompt</th>");
        for c in &self.columns {
            html.push_str(&format!("<th>{}</th>", escape_html(c)));
        }
        html.push_str("</tr>");
        let mut text = String::new();
        for (label, prompt, outs) in &self.rows {
            let differs = outs.windows(2).any(|w| w[0].trim() != w[1].trim());
            html.push_str(&format!("<tr>{TD}{}{}</td>{TD}{}</td>", escape_html(label), if differs { " ≠" } else { "" }, escape_html(&clip(prompt, 400))));
            for o in outs {
                html.push_str(&format!("{TD}{}</td>", escape_html(o)));
            }
            html.push_str("</tr>");
            text.push_str(&format!("[{label}] {}\n", clip(prompt, 80)));
            for (c, o) in self.columns.iter().zip(outs) {
                text.push_str(&format!("  {c}: {}\n", clip(o, 200)));
            }
        }
        html.push_str("</table>");
        emit(&html, &text);
    }
}

/// Generates greedily from each model for each `(label, user prompt)` and collects the
/// outputs side by side. `models` pairs a column title with a transformer (base or adapted).
pub fn compare(
    tokenizer: &crate::model::Tokenizer,
    template: &crate::chat::ChatTemplate,
    models: &[(&str, &crate::model::Transformer)],
    prompts: &[(String, String)],
    max_new_tokens: usize,
) -> crate::Result<Comparison> {
    let rendered: Vec<String> = prompts.iter().map(|(_, p)| template.render_prompt(None, p)).collect::<crate::Result<_>>()?;
    let cfg = crate::generate::GenerationConfig::greedy(max_new_tokens);
    let mut columns_out: Vec<Vec<String>> = Vec::new();
    for (_, model) in models {
        let gens = crate::generate::Generator::new(model, tokenizer).generate_batch(&rendered, &cfg, |_, _| {})?;
        columns_out.push(gens.into_iter().map(|g| g.text).collect());
    }
    let rows = prompts.iter().enumerate().map(|(i, (label, p))| (label.clone(), p.clone(), columns_out.iter().map(|c| c[i].clone()).collect())).collect();
    Ok(Comparison { columns: models.iter().map(|(n, _)| n.to_string()).collect(), rows })
}

/// An HTML file shown inline in a notebook, such as the overview `tunelab eval report
/// --format overview` writes (static tables, no script, so Jupyter keeps it as it is).
#[derive(Debug, Clone)]
pub struct HtmlFile {
    /// The file.
    pub path: std::path::PathBuf,
    html: String,
}

impl HtmlFile {
    /// Reads `path` (bounded, as every input file).
    pub fn open(path: impl AsRef<std::path::Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        Ok(Self { path: path.to_path_buf(), html: crate::fsutil::read_input_text(path)? })
    }

    /// The HTML.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// Notebook view: the HTML itself, with the file's path as the plain-text form.
    pub fn evcxr_display(&self) {
        emit(&self.html, &self.path.display().to_string());
    }
}
