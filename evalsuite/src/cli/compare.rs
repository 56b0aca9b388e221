//! `tunelab eval report` and `tunelab eval gate`: stored runs compared, as a report file
//! and as a CI decision with exit codes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tunelab_evalsuite::compare::gate::{decide, Policy};
use tunelab_evalsuite::compare::report::{self, html, markdown};
use tunelab_evalsuite::compare::{compare, junit, ClusterBy, CompareOptions, RunTable};

/// Output format of `eval report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file.
    Html,
    /// The same comparison as data.
    Json,
    /// The overview as Markdown (pull-request comments).
    Md,
    /// The overview tables alone as static HTML (no script), for a notebook to show inline.
    Overview,
}

/// How cases are grouped for clustered standard errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterArg {
    /// Cases are independent.
    None,
    /// By a case's first tag.
    Tag,
}

/// Statistics settings shared by `report` and `gate`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Cluster cases for standard errors (e.g. cases from one source document share a tag).
    #[arg(long, value_enum, default_value = "none")]
    cluster_by: ClusterArg,
    /// Bootstrap resamples for the intervals (at least 2000).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(2000..=1_000_000))]
    resamples: u64,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0x7e57)]
    seed: u64,
}

impl StatsArgs {
    fn options(&self) -> CompareOptions {
        let mut opts = CompareOptions::default();
        opts.paired.resamples = self.resamples as usize;
        opts.paired.seed = self.seed;
        opts.cluster_by = match self.cluster_by {
            ClusterArg::None => ClusterBy::None,
            ClusterArg::Tag => ClusterBy::FirstTag,
        };
        opts
    }
}

/// Options of `eval report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories (at least two).
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
    /// The run the others are compared with (default: the first).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Where to write the report.
    #[arg(long)]
    out: PathBuf,
    /// html, json, md or overview.
    #[arg(long, value_enum, default_value = "html")]
    format: ReportFormat,
    /// With --format overview: the full report's path, named under the tables.
    #[arg(long, value_name = "PATH")]
    full_report: Option<String>,
    /// A blind review study whose results become a section of the report (repeatable).
    #[arg(long = "review", value_name = "STUDY")]
    reviews: Vec<PathBuf>,
    #[command(flatten)]
    stats: StatsArgs,
}

/// Options of `eval gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// The released (reference) run.
    #[arg(long)]
    baseline: PathBuf,
    /// The run to judge.
    #[arg(long)]
    candidate: PathBuf,
    /// Policy file (`[[rule]]` tables); default: held-out better, guard and ood not worse
    /// by more than 0.05, and the adapter changed something.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Also write JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Also write the comparison and decision as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    stats: StatsArgs,
}

fn load(dir: &Path) -> anyhow::Result<RunTable> {
    RunTable::load(dir).with_context(|| format!("reading the run {}", dir.display()))
}

/// Writes the report; returns where.
pub fn report(args: ReportArgs) -> anyhow::Result<bool> {
    let runs: Vec<RunTable> = args.runs.iter().map(|d| load(d)).collect::<anyhow::Result<_>>()?;
    let baseline = match &args.baseline {
        None => 0,
        Some(b) => {
            let b = b.canonicalize().with_context(|| format!("--baseline {}", b.display()))?;
            args.runs.iter().position(|r| r.canonicalize().is_ok_and(|r| r == b)).context("--baseline must be one of the runs given")?
        }
    };
    let mut report = report::build(&runs, baseline, &args.stats.options())?;
    for study in &args.reviews {
        report.reviews.push(tunelab_evalsuite::review::study_results(study).with_context(|| format!("--review {}", study.display()))?);
    }
    let text = match args.format {
        ReportFormat::Html => html::render(&report)?,
        ReportFormat::Json => report.to_json(),
        ReportFormat::Md => markdown::render(&report),
        ReportFormat::Overview => html::render_overview(&report, args.full_report.as_deref())?,
    };
    tunelab::fsutil::write_atomic(&args.out, text.as_bytes())?;
    for c in &report.comparisons {
        for k in &c.categories {
            println!(
                "{} vs {}: {:<8} Δ {:+.3} [{:+.3}, {:+.3}] n {} → {}",
                c.candidate.name,
                c.baseline.name,
                k.category,
                k.score.diff,
                k.score.bootstrap.0,
                k.score.bootstrap.1,
                k.n,
                k.verdict.label()
            );
        }
    }
    println!("report: {}", args.out.display());
    Ok(true)
}

/// Decides; exits 0 (pass), 1 (the candidate failed a rule) or 2 (the data cannot decide).
pub fn gate(args: GateArgs) -> anyhow::Result<bool> {
    let decided = (|| -> anyhow::Result<u8> {
        let policy = match &args.policy {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        let (baseline, candidate) = (load(&args.baseline)?, load(&args.candidate)?);
        let comparison = compare(&baseline, &candidate, &args.stats.options());
        let decision = decide(&comparison, &policy);
        print!("{}", decision.render_text());
        if let Some(path) = &args.junit {
            tunelab::fsutil::write_atomic(path, junit::render(&comparison, &decision).as_bytes())?;
        }
        if let Some(path) = &args.json {
            let json = serde_json::to_string_pretty(&serde_json::json!({ "comparison": comparison, "decision": decision }))?;
            tunelab::fsutil::write_atomic(path, json.as_bytes())?;
        }
        Ok(decision.exit_code())
    })();
    let code = match decided {
        Ok(code) => code,
        Err(e) => {
            let message = super::error_chain(&e);
            eprintln!("error: {message}");
            // Reports from an earlier gate at these paths would tell CI something else.
            let reports = [(&args.junit, junit::render_error(&message)), (&args.json, serde_json::json!({ "error": message }).to_string())];
            for (path, text) in reports {
                if let Some(Err(e)) = path.as_ref().map(|p| tunelab::fsutil::write_atomic(p, text.as_bytes())) {
                    eprintln!("error: {e}");
                }
            }
            2
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code))
}
