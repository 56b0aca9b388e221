//! `tunelab bench`: speed and memory figures, side by side with the reference scripts in
//! `shared/bench/` (PyTorch + PEFT training, llama.cpp generation) run in the same command.
//!
//! Each measured configuration runs in its own child process (`tunelab bench worker …`), so
//! every peak-RSS figure belongs to that configuration alone; the parent collects their JSON
//! lines, runs the references with `--reference`, and prints one table with the machine
//! and date.

mod generate;
mod machine;
mod reference;
mod score;
mod table;
mod train;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use train::peak_rss_mb;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LoRA training throughput and peak memory at several shapes and on a real dataset.
    Train(train::TrainBenchArgs),
    /// Single-stream greedy generation throughput (with or without an adapter).
    Generate(generate::GenerateBenchArgs),
    /// Evaluation-style batched generation: many prompts, many new tokens.
    Eval(generate::EvalBenchArgs),
    /// Scoring throughput of all non-model scorers on recorded pairs (compare with
    /// tests/vectors/scorers/bench_scorers.py).
    Score(ScoreBenchArgs),
    /// One measurement in this process, printed as a JSON line (used by the commands above).
    #[command(hide = true, subcommand)]
    Worker(WorkerCommand),
}

/// Single measurements run in a child process.
#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Training steps at one shape or on one dataset.
    Train(train::TrainWorkerArgs),
}

/// Options of `tunelab bench score`.
#[derive(Debug, Args)]
pub struct ScoreBenchArgs {
    /// Recorded (reference, candidate) pairs (the repository's are
    /// tests/vectors/scorers/pairs.jsonl).
    #[arg(long)]
    pairs: PathBuf,
    /// Pairs to score (the file is cycled, index appended to candidates, as the Python script does).
    #[arg(long, default_value_t = 10_000)]
    n: usize,
}

/// Where the reference scripts are and which Python runs them.
#[derive(Debug, Clone, Args)]
pub struct ReferenceArgs {
    /// Also run the reference scripts (PyTorch + PEFT, llama.cpp) in this run.
    #[arg(long)]
    reference: bool,
    /// Python with the reference packages (default: $TUNELAB_REF_PYTHON, else
    /// ~/.cache/tunelab/refvenv/bin/python, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Directory of the reference scripts (default: $TUNELAB_SHARED_BENCH, else
    /// shared/bench found from the current directory upwards).
    #[arg(long)]
    reference_dir: Option<PathBuf>,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Train(a) => train::run(a),
        BenchCommand::Generate(a) => generate::run_generate(a),
        BenchCommand::Eval(a) => generate::run_eval(a),
        BenchCommand::Score(a) => score::run(&a.pairs, a.n),
        BenchCommand::Worker(WorkerCommand::Train(a)) => train::worker(a),
    }
}
