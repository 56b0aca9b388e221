//! Argument parsing and dispatch for the `tunelab` command.

mod bench;
mod compare;
mod data;
mod decoding;
mod device;
mod eval;
mod export;
mod generate;
mod merge;
mod review;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tunelab: fine-tune LoRA adapters and find out, honestly, whether they got better.
#[derive(Debug, Parser)]
#[command(name = "tunelab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest input file read (datasets, suites, rubrics, predictions, caches), in MiB;
    /// default 1024 or $TUNELAB_MAX_INPUT_MB.
    #[arg(long, global = true, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..))]
    max_input_mb: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a reply to one prompt with a model (and optionally a LoRA adapter).
    Generate(generate::GenerateArgs),
    /// Check, split and replay datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Fine-tune a LoRA adapter.
    Train(train::TrainArgs),
    /// Merge a LoRA adapter into its base model (writes an HF directory; without an
    /// adapter, writes the base model itself as one).
    Merge(merge::MergeArgs),
    /// Evaluate models and adapters on suites; summarize runs.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Speed benchmarks (compare with shared/bench/ reference scripts).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Hand data and settings to other tools (LLaMA-Factory).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Blind A/B review studies: create, invite reviewers, close, results.
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// The blind review service reviewers open in a browser.
    Serve(review::ServeArgs),
}

/// Parses the command line, runs the command, and turns errors into a message and exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Some(mb) = cli.max_input_mb {
        tunelab::fsutil::set_input_limit(mb.saturating_mul(1 << 20));
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(args).map(|()| true),
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run(args).map(|()| true),
        Command::Merge(args) => merge::run(args).map(|()| true),
        Command::Eval(cmd) => eval::run(cmd),
        Command::Bench(cmd) => bench::run(cmd).map(|()| true),
        Command::Export(cmd) => export::run(cmd),
        Command::Review(cmd) => review::run(cmd),
        Command::Serve(args) => review::serve(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `e` and its causes joined by `: `, leaving out a cause whose text is already there (an
/// error that prints its source in its own message, as `cannot read X: <io error>` does,
/// would otherwise show the io error twice).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}
