//! `tunelab merge`: fold a LoRA adapter into the base weights and write an HF directory
//! (without an adapter: the base model itself, e.g. a GGUF file as an f32 HF directory).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tunelab::prelude::*;

/// Options of `tunelab merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Base model: GGUF file or HF directory.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// The LoRA adapter directory. Without it the base model itself is written (a GGUF
    /// file's weights dequantized to f32), for tools that read HF directories.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Output HF model directory.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `tunelab merge`.
pub fn run(a: MergeArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let (cfg, weights) = Model::load_weights(&a.model)?;
    let weights = match &a.adapter {
        Some(dir) => AdapterSet::load_for(dir, &model)?.merge_into(&weights)?,
        None => weights,
    };
    tunelab::model::write_hf_dir(&a.out, &cfg, &weights, &model.tokenizer, &model.template)?;
    let what = if a.adapter.is_some() { "merged model" } else { "model" };
    println!("{what}: {}", a.out.display());
    Ok(())
}
