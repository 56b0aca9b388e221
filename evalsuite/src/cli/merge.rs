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
    // One read of the file: the model checks the adapter, and its weights (which the
    // model's tensors share) take the merge once the model is dropped.
    let (model, weights) = Model::load_with_weights(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let adapter = a.adapter.as_deref().map(|dir| AdapterSet::load_for(dir, &model)).transpose()?;
    let Model { path, transformer, tokenizer, template, .. } = model;
    let cfg = transformer.config().clone();
    drop(transformer);
    let merged = adapter.is_some();
    let weights = match adapter {
        Some(set) => set.merge_into(weights)?,
        None => weights,
    };
    // The base written as it is keeps the source's name, so its adapters load on it.
    let name_or_path = (!merged).then(|| path.display().to_string());
    tunelab::model::write_hf_dir(&a.out, &cfg, &weights, &tokenizer, &template, name_or_path.as_deref())?;
    let what = if merged { "merged model" } else { "model" };
    println!("{what}: {}", a.out.display());
    Ok(())
}
