//! `tunelab export …`: hand data and settings to other tools.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tunelab_evalsuite::interop::llamafactory::{export, ExportOptions};

/// `tunelab export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A dataset and tunelab's LoRA settings as a LLaMA-Factory project (data,
    /// dataset_info.json, training and prediction YAML, launch lines).
    Llamafactory(LlamafactoryArgs),
    /// A LoRA adapter (tunelab's or PEFT's) as llama.cpp's GGUF LoRA file, to serve on the
    /// base GGUF (`llama-server --lora FILE`, llama-cpp-python's `lora_path`).
    #[command(name = "gguf-lora")]
    GgufLora(GgufLoraArgs),
}

/// Options of `export gguf-lora`.
#[derive(Debug, Args)]
pub struct GgufLoraArgs {
    /// The adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// The base model the adapter was trained on (GGUF or HF directory).
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// The GGUF file to write.
    #[arg(long)]
    out: PathBuf,
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
    /// The settings to translate: a `train_config.json` that `tunelab train` wrote (default:
    /// tunelab's defaults: rank 8, alpha 16, lr 5e-5, 3 epochs, batch 4, cutoff 1024).
    #[arg(long)]
    train_config: Option<PathBuf>,
    /// The project directory to write.
    #[arg(long)]
    out: PathBuf,
}

/// Runs an `export` subcommand.
pub fn run(cmd: ExportCommand) -> anyhow::Result<bool> {
    match cmd {
        ExportCommand::Llamafactory(a) => {
            let train: tunelab::train::TrainConfig = match &a.train_config {
                Some(path) => {
                    let bytes = tunelab::fsutil::read_bounded(path, 1 << 20)?;
                    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a train_config.json tunelab train wrote", path.display()))?
                }
                None => Default::default(),
            };
            let opts = ExportOptions { data: a.data, eval_data: a.eval_data, model: a.model, template: a.template, name: a.name, train };
            let done = export(&opts, &a.out)?;
            println!("wrote {} ({} examples, {} format, template {}):", a.out.display(), done.examples, done.formatting, done.template);
            for f in &done.files {
                println!("  {f}");
            }
            for w in &done.warnings {
                eprintln!("warning: {w}");
            }
            println!("next: cd {} && llamafactory-cli train train_lora_sft.yaml (README.md has multi-node and DeepSpeed lines)", a.out.display());
        }
        ExportCommand::GgufLora(a) => {
            let model = tunelab::Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
            let adapter = tunelab::AdapterSet::load_for(&a.adapter, &model)?;
            adapter.write_gguf_lora(model.config(), &a.out)?;
            println!("wrote {} (LoRA rank {} for {})", a.out.display(), adapter.config.r, model.path.display());
        }
    }
    Ok(true)
}
