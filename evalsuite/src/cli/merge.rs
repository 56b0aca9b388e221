//! `tunelab merge`: fold a LoRA adapter into the base weights and write an HF directory.

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
    /// The LoRA adapter directory.
    #[arg(long)]
    adapter: PathBuf,
    /// Output HF model directory.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `tunelab merge`.
pub fn run(a: MergeArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let adapter = AdapterSet::load_for(&a.adapter, &model)?;
    let (cfg, weights) = Model::load_weights(&a.model)?;
    let merged = adapter.merge_into(&weights)?;
    tunelab::model::write_hf_dir(&a.out, &cfg, &merged, &model.tokenizer, &model.template)?;
    println!("merged model: {}", a.out.display());
    Ok(())
}
