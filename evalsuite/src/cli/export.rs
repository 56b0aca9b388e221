//! `tunelab export …`: hand data and settings to other tools.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tunelab_evalsuite::interop::llamafactory::{export, ExportOptions};

/// `tunelab export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A dataset and tunelab's LoRA settings as a LLaMA-Factory project (data,
    /// dataset_info.json, training and prediction YAML, launch lines).
    Llamafactory(LlamafactoryArgs),
}

/// Options of `export llamafactory`.
#[derive(Debug, Args)]
pub struct LlamafactoryArgs {
    /// Training data (any format tunelab reads).
    #[arg(long)]
    data: PathBuf,
    /// Held-out data (evaluation and predictions); without it LLaMA-Factory holds out 10 %.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// The base model as LLaMA-Factory loads it (hub id or path).
    #[arg(long)]
    model: String,
    /// LLaMA-Factory's chat template (guessed from --model: qwen, llama3, smollm2, …).
    #[arg(long)]
    template: Option<String>,
    /// The dataset's name in dataset_info.json.
    #[arg(long, default_value = "tunelab")]
    name: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Examples per device and step.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Gradient accumulation steps.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Longest tokenized example.
    #[arg(long, default_value_t = 1024)]
    cutoff: usize,
    /// The project directory to write.
    #[arg(long)]
    out: PathBuf,
}

/// Runs an `export` subcommand.
pub fn run(cmd: ExportCommand) -> anyhow::Result<bool> {
    match cmd {
        ExportCommand::Llamafactory(a) => {
            let mut train = tunelab::train::TrainConfig {
                learning_rate: a.lr,
                epochs: a.epochs,
                batch_size: a.batch_size,
                grad_accum: a.grad_accum,
                cutoff_len: a.cutoff,
                ..Default::default()
            };
            train.lora.r = a.rank;
            train.lora.lora_alpha = a.alpha;
            train.lora.check_usable().map_err(|m| anyhow::anyhow!("{m}"))?;
            let opts = ExportOptions { data: a.data, eval_data: a.eval_data, model: a.model, template: a.template, name: a.name, train };
            let done = export(&opts, &a.out)?;
            println!("wrote {} ({} examples, {} format, template {}):", a.out.display(), done.examples, done.formatting, done.template);
            for f in &done.files {
                println!("  {f}");
            }
            println!("next: cd {} && llamafactory-cli train train_lora_sft.yaml (README.md has multi-node and DeepSpeed lines)", a.out.display());
        }
    }
    Ok(true)
}
