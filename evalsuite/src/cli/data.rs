//! `tunelab data check` and `tunelab data split`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use tunelab::data::{Columns, DatasetFormat, LoadOptions, SplitSpec, ValidationOptions};
use tunelab::prelude::*;

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a dataset: errors with file:line, duplicates, lengths, overlap with eval data.
    Check(CheckArgs),
    /// Split a dataset into train and held-out files, reproducibly.
    Split(SplitArgs),
    /// Replay data against forgetting: the base model's own answers to general prompts,
    /// written as training records to mix into a fine-tuning set.
    Replay(ReplayArgs),
}

/// How to read a dataset file (shared by every command that reads one).
#[derive(Debug, Args, Clone)]
pub struct FormatArgs {
    /// Record format: auto, alpaca, sharegpt, openai.
    #[arg(long, default_value = "auto")]
    pub format: DatasetFormat,
    /// Column mapping as JSON, LLaMA-Factory style, e.g. '{"prompt":"question","response":"answer"}'.
    #[arg(long)]
    pub columns: Option<String>,
}

impl FormatArgs {
    /// The load options these flags describe.
    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let columns: Columns = match &self.columns {
            Some(json) => serde_json::from_str(json).context("--columns is not a valid column mapping")?,
            None => Columns::default(),
        };
        Ok(LoadOptions { format: self.format, columns, prompts_only: false })
    }
}

/// Options of `tunelab data check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The dataset (JSON, JSONL or CSV).
    file: PathBuf,
    /// An evaluation file whose prompts must not appear in FILE.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Model whose tokenizer and chat template measure token lengths.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Skip token statistics (no model needed).
    #[arg(long)]
    no_tokens: bool,
    /// Token cutoff to check against.
    #[arg(long, default_value_t = 1024)]
    cutoff: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    format: FormatArgs,
}

/// Options of `tunelab data split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The dataset to split.
    file: PathBuf,
    /// Held-out size: a fraction (0.2) or a count (30).
    #[arg(long)]
    heldout: SplitSpec,
    /// Shuffle seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the training part goes.
    #[arg(long)]
    train_out: PathBuf,
    /// Where the held-out part goes.
    #[arg(long)]
    heldout_out: PathBuf,
    #[command(flatten)]
    format: FormatArgs,
}

/// Options of `tunelab data replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// General-capability prompts (any dataset format; their answers, if any, are ignored).
    /// Keep them apart from the guard suite that will judge the adapter.
    prompts: PathBuf,
    /// The base model whose greedy answers become the targets.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Where the records go (JSON Lines, OpenAI `messages` form with an `id`).
    #[arg(long)]
    out: PathBuf,
    /// Most new tokens per answer; answers cut at this length are left out (a cut answer
    /// would teach the model to stop mid-sentence).
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Prompts decoded together.
    #[arg(long, default_value_t = tunelab_evalsuite::backend::local::DEFAULT_BATCH)]
    batch: usize,
    #[command(flatten)]
    format: FormatArgs,
}

/// Runs a data subcommand; returns whether it succeeded (a check with errors fails).
pub fn run(cmd: DataCommand) -> anyhow::Result<bool> {
    match cmd {
        DataCommand::Check(a) => check(a),
        DataCommand::Split(a) => split(a),
        DataCommand::Replay(a) => replay(a),
    }
}

/// Self-distillation replay (as in "Self-Distillation Bridges Distribution Gap in Language
/// Model Fine-Tuning", Yang et al. 2024): training on the base model's own answers to
/// general prompts holds those answers in place while the rest of the data moves the model.
fn replay(a: ReplayArgs) -> anyhow::Result<bool> {
    let data = Dataset::load_with(&a.prompts, &LoadOptions { prompts_only: true, ..a.format.load_options()? })?;
    if let Some(issue) = data.issues.first() {
        anyhow::bail!("{} has {} unreadable record(s), first: {issue}", a.prompts.display(), data.issues.len());
    }
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let turns: Vec<Vec<Message>> = data.examples.iter().map(|ex| ex.prompt_messages().to_vec()).collect();
    let prompts = turns.iter().map(|m| model.tokenizer.encode_with_bos(&model.template.render(m, true)?)).collect::<tunelab::Result<Vec<_>>>()?;
    let mut answers: Vec<Option<tunelab::Result<Generation>>> = (0..prompts.len()).map(|_| None).collect();
    let generator = Generator::new(&model.transformer, &model.tokenizer);
    generator.generate_continuous(&prompts, &GenerationConfig::greedy(a.max_tokens), a.batch, |_, _| {}, |i, g| answers[i] = Some(g))?;
    let source = a.model.file_name().map_or_else(|| a.model.display().to_string(), |n| n.to_string_lossy().into_owned());
    let (mut lines, mut cut) = (String::new(), 0);
    for (i, (turns, answer)) in turns.into_iter().zip(answers).enumerate() {
        let ex = &data.examples[i];
        let g = answer.expect("every prompt is reported").with_context(|| format!("prompt at {}", ex.source.position()))?;
        if g.finish_reason != FinishReason::Stop || g.text.trim().is_empty() {
            cut += 1;
            continue;
        }
        let id = ex.id.clone().unwrap_or_else(|| format!("replay-{:04}", i + 1));
        let mut messages = turns;
        messages.push(Message::assistant(g.text.trim()));
        lines.push_str(&serde_json::to_string(&serde_json::json!({"id": id, "messages": messages, "source": format!("replay:{source}")}))?);
        lines.push('\n');
    }
    tunelab::fsutil::write_atomic(&a.out, lines.as_bytes())?;
    println!(
        "{}: {} replay record(s) from {}'s own answers ({} left out: cut at --max-tokens {} or empty)",
        a.out.display(),
        prompts.len() - cut,
        source,
        cut,
        a.max_tokens
    );
    Ok(true)
}

fn check(a: CheckArgs) -> anyhow::Result<bool> {
    let opts = a.format.load_options()?;
    let data = Dataset::load_with(&a.file, &opts)?;
    let eval = a.against.as_ref().map(|p| Dataset::load_with(p, &opts)).transpose()?;
    let model = if a.no_tokens {
        None
    } else {
        Some(Model::load(&a.model).with_context(|| format!("loading {} for token statistics (or pass --no-tokens)", a.model.display()))?)
    };
    let report = ValidationReport::build(
        &data,
        eval.as_ref(),
        model.as_ref().map(|m| (&m.tokenizer, &m.template)),
        &ValidationOptions { cutoff_len: a.cutoff, ..Default::default() },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(!report.has_errors())
}

fn split(a: SplitArgs) -> anyhow::Result<bool> {
    for (x, y, what) in [
        (&a.train_out, &a.heldout_out, "--train-out and --heldout-out"),
        (&a.file, &a.train_out, "the dataset and --train-out"),
        (&a.file, &a.heldout_out, "the dataset and --heldout-out"),
    ] {
        if same_file(x, y) {
            anyhow::bail!("{what} name the same file ({}); give each part its own path", y.display());
        }
    }
    let data = Dataset::load_with(&a.file, &a.format.load_options()?)?;
    if !data.issues.is_empty() {
        anyhow::bail!(
            "{} has {} unreadable record(s), first: {}; fix them (see `tunelab data check`) before splitting",
            a.file.display(),
            data.issues.len(),
            data.issues[0]
        );
    }
    let (train, held) = data.split(a.seed, a.heldout)?;
    train.save_jsonl(&a.train_out)?;
    held.save_jsonl(&a.heldout_out)?;
    println!("{} → {} train ({}), {} held-out ({})", a.file.display(), train.len(), a.train_out.display(), held.len(), a.heldout_out.display());
    Ok(true)
}

/// Whether two paths name one file: equal once made absolute, or the same existing file
/// (through links or `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    let absolute = |p: &Path| std::path::absolute(p).ok();
    if absolute(a).is_some_and(|x| Some(x) == absolute(b)) {
        return true;
    }
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}
