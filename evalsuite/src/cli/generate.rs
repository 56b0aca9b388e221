//! `tunelab generate`: one chat-templated prompt in, the completion streamed to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tunelab::prelude::*;

use super::decoding::{DecodeWeights, DecodingArgs};
use super::device::DeviceArgs;

/// Options of `tunelab generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// GGUF file or HF model directory (looked up under $TUNELAB_MODELS and ./models too).
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// A LoRA adapter directory (PEFT format) to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An optional system message.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Weights decoding steps read: f32 (exactly the trained model) or q8_0 (an 8-bit copy:
    /// single-stream decoding about twice as fast; prompts still use f32, and greedy picks
    /// equal f32's at ≥ 95% of steps along f32's own answer, see BENCHMARKS.md).
    #[arg(long, value_enum, default_value = "f32")]
    weights: DecodeWeights,
    /// Use a named chat template instead of the model's own (default, chatml, qwen, llama3).
    #[arg(long)]
    template: Option<String>,
}

/// Runs `tunelab generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let mut model = args.device.load_model(&args.model)?;
    if let Some(name) = &args.template {
        model.set_template(name)?;
    }
    let adapter = match &args.adapter {
        Some(dir) => Some(AdapterSet::load_for(dir, &model).with_context(|| format!("loading adapter {}", dir.display()))?),
        None => None,
    };
    let adapted = args.weights.prepare(&model.transformer, adapter.as_ref()).context("preparing the decoding weights")?;
    let prompt = model.template.render_prompt(args.system.as_deref(), &args.prompt)?;
    let cfg = args.decoding.config();
    let mut stdout = std::io::stdout().lock();
    let out = Generator::new(&adapted, &model.tokenizer).generate(&prompt, &cfg, |piece| {
        // A closed pipe (`| head`) is not worth a panic; generation simply finishes.
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
    })?;
    let _ = writeln!(stdout);
    eprintln!(
        "[{} prompt tokens in {:.2}s; {} tokens in {:.2}s, {:.1} tok/s; finish: {:?}]",
        out.prompt_tokens,
        out.prompt_seconds,
        out.token_ids.len(),
        out.generate_seconds,
        out.tokens_per_second(),
        out.finish_reason
    );
    Ok(())
}
