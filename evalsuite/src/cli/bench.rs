//! `tunelab bench`: speed figures to set beside the reference scripts in shared/bench/.
//!
//! `bench train` times LoRA training steps (forward, backward, AdamW) on random token
//! batches with the loss on every position — the same workload as
//! `torch_lora_reference.py` — and prints one JSON line. `bench generate` times greedy
//! generation on the same prompts as `llamacpp_generate_reference.py`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use tunelab::lora::LoraConfig;
use tunelab::prelude::*;
use tunelab::train::{causal_lm_loss, AdamW};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LoRA training step throughput on random batches.
    Train(TrainBenchArgs),
    /// Greedy generation throughput.
    Generate(GenerateBenchArgs),
    /// Scoring throughput of all non-model scorers on recorded pairs (compare with
    /// tests/vectors/scorers/bench_scorers.py).
    Score(ScoreBenchArgs),
}

/// Options of `tunelab bench score`.
#[derive(Debug, Args)]
pub struct ScoreBenchArgs {
    /// Recorded (reference, candidate) pairs.
    #[arg(long, default_value = "tests/vectors/scorers/pairs.jsonl")]
    pairs: PathBuf,
    /// Pairs to score (the file is cycled, index appended to candidates, as the Python script does).
    #[arg(long, default_value_t = 10_000)]
    n: usize,
}

/// Options of `tunelab bench train`.
#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// Base model.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

/// Options of `tunelab bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBenchArgs {
    /// Model.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
}

/// The prompts of shared/bench/llamacpp_generate_reference.py.
const PROMPTS: [&str; 4] = [
    "Explain photosynthesis in three sentences.",
    "Write a Python function that checks whether a string is a palindrome.",
    "What is SQL injection and how do you prevent it?",
    "Summarize the benefits of unit testing.",
];

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Train(a) => train(a),
        BenchCommand::Generate(a) => generate(a),
        BenchCommand::Score(a) => super::bench_score::run(&a.pairs, a.n),
    }
}

fn train(a: TrainBenchArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let adapter = AdapterSet::new(&model.transformer, LoraConfig::default(), 0)?;
    let adapted = adapter.apply(&model.transformer);
    let mut opt = AdamW::new(adapter.vars(), 0.9, 0.999, 1e-8, 0.0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let vocab = model.config().vocab_size as u32;
    let ids: Vec<u32> = (0..a.batch * a.seq).map(|_| rng.random_range(0..vocab)).collect();
    let input = Tensor::from_vec(ids.clone(), (a.batch, a.seq), &Device::Cpu)?;
    let labels = Tensor::from_vec(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), (a.batch, a.seq), &Device::Cpu)?;
    let vars = adapter.vars();
    let mut step = || -> anyhow::Result<f64> {
        let (loss, _) = causal_lm_loss(&adapted, &input, &labels)?;
        let grads = loss.backward()?;
        let g: Vec<Tensor> = vars.iter().map(|v| grads.get(v.as_tensor()).cloned().map_or_else(|| v.zeros_like(), Ok)).collect::<candle_core::Result<_>>()?;
        opt.step(&g, 5e-5)?;
        Ok(loss.to_scalar::<f32>()? as f64)
    };
    for _ in 0..a.warmup {
        step()?;
    }
    let mut times = Vec::new();
    let mut loss = 0.0;
    for _ in 0..a.steps {
        let t = Instant::now();
        loss = step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "impl": "tunelab", "matmul": tunelab::model::matmul::matmul_backend(), "threads": rayon_threads(),
            "batch": a.batch, "seq": a.seq, "step_s_median": (med * 1e4).round() / 1e4,
            "tokens_per_s": ((a.batch * a.seq) as f64 / med * 10.0).round() / 10.0, "loss": (loss * 1e4).round() / 1e4,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}

fn generate(a: GenerateBenchArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let (mut tokens, mut seconds, mut prompt_s) = (0usize, 0.0, 0.0);
    let mut first = String::new();
    for p in PROMPTS {
        let prompt = model.template.render_prompt(None, p)?;
        let t = Instant::now();
        let out = gen.generate(&prompt, &GenerationConfig::greedy(a.max_tokens), |_| {})?;
        seconds += t.elapsed().as_secs_f64();
        prompt_s += out.prompt_seconds;
        tokens += out.token_ids.len();
        if first.is_empty() {
            first = out.text.chars().take(200).collect();
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "impl": "tunelab", "matmul": tunelab::model::matmul::matmul_backend(), "threads": rayon_threads(),
            "completion_tokens": tokens, "end_to_end_tokens_per_s": (tokens as f64 / seconds * 10.0).round() / 10.0,
            "prompt_seconds_total": (prompt_s * 1000.0).round() / 1000.0, "peak_rss_mb": peak_rss_mb(), "first_output": first,
        })
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}
