//! `tunelab train`: fine-tune a LoRA adapter with a progress bar; Ctrl-C checkpoints.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tunelab::lora::LoraConfig;
use tunelab::prelude::*;
use tunelab::train::TrainStatus;

use super::data::FormatArgs;
use super::device::{BaseDtype, DeviceArgs};

/// Options of `tunelab train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Base model: GGUF file or HF directory.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Training data (Alpaca, ShareGPT or OpenAI messages; JSON, JSONL or CSV).
    #[arg(long)]
    data: PathBuf,
    /// Held-out data for eval loss.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Output directory for the adapter, logs, chart and checkpoints.
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Projections to adapt: all, or a comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    target: Vec<String>,
    /// Scale by alpha/√r (rsLoRA).
    #[arg(long)]
    rslora: bool,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Stop after this many steps (0 = all epochs).
    #[arg(long, default_value_t = 0)]
    max_steps: usize,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Longest example in tokens.
    #[arg(long, default_value_t = 1024)]
    cutoff: usize,
    /// Warmup fraction of steps.
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Gradient-norm clip (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Held-out loss every N steps (and at the end).
    #[arg(long, default_value_t = 0)]
    eval_steps: usize,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 0)]
    save_steps: usize,
    /// Learn the prompt tokens too.
    #[arg(long)]
    train_on_prompt: bool,
    /// Drop invalid records (they are counted and reported) instead of refusing the data.
    #[arg(long)]
    skip_invalid: bool,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Recompute activations layer by layer in the backward pass: a fraction of the memory
    /// for about a third more time.
    #[arg(long)]
    low_memory: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// How the frozen base weights are stored: f32, or bf16 (half the memory; for GPUs).
    #[arg(long, value_enum, default_value = "f32")]
    base_dtype: BaseDtype,
    /// Refuse to start when training would need more than this many MiB beyond the model
    /// (default: the memory the machine has available).
    #[arg(long)]
    memory_budget: Option<u64>,
    #[command(flatten)]
    format: FormatArgs,
}

/// Prints a line above the progress bar, or plainly to stderr when the bar is hidden (not a
/// terminal: logs and CI keep every line).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Runs `tunelab train`.
pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let mut model = a.device.load_model(&a.model)?;
    // Training never decodes: free the file's blocks kept for decoding steps.
    model.transformer = a.base_dtype.apply(&model.transformer.without_packed_weights())?;
    let opts = a.format.load_options()?;
    let train = Dataset::load_with(&a.data, &opts)?;
    let eval = a.eval_data.as_ref().map(|p| Dataset::load_with(p, &opts)).transpose()?;
    let lora = LoraConfig { r: a.rank, lora_alpha: a.alpha, lora_dropout: a.dropout, use_rslora: a.rslora, ..LoraConfig::default() }.with_targets(&a.target)?;
    let config = TrainConfig {
        lora,
        learning_rate: a.lr,
        epochs: a.epochs,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        warmup_ratio: a.warmup_ratio,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        cutoff_len: a.cutoff,
        train_on_prompt: a.train_on_prompt,
        seed: a.seed,
        eval_steps: a.eval_steps,
        save_steps: a.save_steps,
        max_steps: a.max_steps,
        skip_invalid: a.skip_invalid,
        low_memory: a.low_memory,
        memory_budget_mib: a.memory_budget,
        ..TrainConfig::default()
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint after the current step (Ctrl-C again to abort)");
    })
    .context("installing the Ctrl-C handler")?;

    eprintln!("matmul backend: {}", tunelab::model::matmul::matmul_backend());
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]").expect("valid template"));
    let mut last_eval = None;
    let trainer = Trainer::new(&model, config, &a.out).with_cancel_flag(cancel).resume(a.resume);
    let outcome = trainer.run(&train, eval.as_ref(), |event| match event {
        TrainEvent::Started { total_steps, start_step, examples, skipped, shortened, trainable_params } => {
            bar.set_length(*total_steps as u64);
            bar.set_position(*start_step as u64);
            say(&bar, format!("{examples} examples ({skipped} invalid skipped), {trainable_params} trainable parameters, {total_steps} steps"));
            if a.resume && *start_step == 0 {
                say(&bar, format!("note: --resume found no checkpoint in {}; training starts at step 0", a.out.display()));
            }
            if *shortened > 0 {
                say(&bar, format!("warning: {shortened} example(s) longer than --cutoff were shortened (tunelab data check --model M --cutoff N lists them)"));
            }
        }
        TrainEvent::Step { step, loss, lr, tokens_per_second, .. } => {
            bar.set_position(*step as u64);
            let eval = last_eval.map(|l: f64| format!(" eval {l:.4}")).unwrap_or_default();
            bar.set_message(format!("loss {loss:.4}{eval} lr {lr:.2e} {tokens_per_second:.0} tok/s"));
        }
        TrainEvent::Eval { step, eval_loss } => {
            last_eval = Some(*eval_loss);
            say(&bar, format!("step {step}: eval loss {eval_loss:.4}"));
        }
        TrainEvent::Checkpoint { dir, .. } => say(&bar, format!("checkpoint: {}", dir.display())),
        TrainEvent::Memory { estimate_mib, available_mib, low_memory } => say(
            &bar,
            format!(
                "memory: about {estimate_mib} MiB for training beyond the model{}{}",
                available_mib.map(|a| format!(", {a} MiB available")).unwrap_or_default(),
                if *low_memory { " (low-memory mode: layers recomputed in the backward pass)" } else { "" }
            ),
        ),
        TrainEvent::EpochEnd { epoch, peak_rss_mib, rss_mib } => say(
            &bar,
            format!(
                "epoch {epoch} done: peak RSS {} MiB, RSS now {} MiB",
                peak_rss_mib.map_or("?".into(), |m| m.to_string()),
                rss_mib.map_or("?".into(), |m| m.to_string())
            ),
        ),
    });
    bar.finish();
    let outcome = outcome?;
    if outcome.skipped > 0 {
        eprintln!("skipped {} invalid record(s) of {}", outcome.skipped, a.data.display());
    }
    let losses = outcome.losses();
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        eprintln!("loss {:.4} → {:.4} over {} steps", first.1, last.1, outcome.steps);
    }
    match outcome.status {
        TrainStatus::Completed => println!("adapter: {}", a.out.display()),
        TrainStatus::Interrupted { checkpoint } => {
            println!("interrupted; resume with --resume (checkpoint: {})", checkpoint.display());
            std::process::exit(130);
        }
    }
    Ok(())
}
