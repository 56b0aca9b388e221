//! `tunelab bench generate` (single-stream greedy decoding, the prompts of
//! `llamacpp_generate_reference.py`) and `tunelab bench eval` (many prompts decoded in
//! batches, as `eval run` does), each beside llama.cpp's single-stream rate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tunelab::prelude::*;
use tunelab::Transformer;

use super::reference::References;
use super::table::{num, ratio, Table};
use super::ReferenceArgs;
use crate::cli::decoding::DecodeWeights;
use crate::cli::device::DeviceArgs;

/// The prompts of shared/bench/llamacpp_generate_reference.py.
const PROMPTS: [&str; 4] = [
    "Explain photosynthesis in three sentences.",
    "Write a Python function that checks whether a string is a palindrome.",
    "What is SQL injection and how do you prevent it?",
    "Summarize the benefits of unit testing.",
];

/// Options of `tunelab bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBenchArgs {
    /// Model.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// A LoRA adapter to generate with (attached as `eval run` attaches it).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Weights decoding steps read.
    #[arg(long, value_enum, default_value = "f32")]
    weights: DecodeWeights,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// Options of `tunelab bench eval`.
#[derive(Debug, Args)]
pub struct EvalBenchArgs {
    /// Model.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Prompts: a dataset file (Alpaca, ShareGPT or OpenAI messages), cycled to --prompts
    /// (default: the guard suite's questions, built into tunelab).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Number of prompts.
    #[arg(long, default_value_t = 32)]
    prompts: usize,
    /// New tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Prompts decoded together (continuous batching slots).
    #[arg(long, default_value_t = tunelab_evalsuite::backend::local::DEFAULT_BATCH)]
    batch: usize,
    /// Weights prompts and decoding steps read (as `eval run --weights`); rounding weights
    /// also decode with the exact f32 weights, untimed, to count the answers that stayed
    /// the same.
    #[arg(long, value_enum, default_value = "f32")]
    weights: DecodeWeights,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// Loads the model, folds in an adapter when given, and prepares the decoding weights.
fn load(model: &std::path::Path, adapter: Option<&std::path::Path>, weights: DecodeWeights, device: &DeviceArgs) -> anyhow::Result<(Model, Transformer)> {
    let m = device.load_model(model)?;
    let adapter = adapter.map(|dir| AdapterSet::load_for(dir, &m)).transpose()?;
    let decoding = weights.prepare(&m.transformer, adapter.as_ref())?;
    Ok((m, decoding))
}

/// llama.cpp's single-stream figures, or `None` (with a note) when it cannot run; with
/// `lora`, llama.cpp generates with that GGUF LoRA adapter applied.
fn llamacpp(refs: Option<&References>, model: &Path, max_tokens: usize, lora: Option<&Path>) -> anyhow::Result<Option<Value>> {
    let Some(r) = refs else { return Ok(None) };
    let model = tunelab::model::resolve_model_path(model)?;
    let missing = r.missing_modules(&["llama_cpp"])?;
    if !missing.is_empty() {
        eprintln!("{}", r.missing_message(&["llama-cpp-python".to_string()]));
        return Ok(None);
    }
    let args = [model.display().to_string(), "--max-tokens".into(), max_tokens.to_string()];
    let v = match lora {
        Some(lora) => r.run_with_lora("llamacpp_generate_reference.py", &args, lora)?,
        None => r.run("llamacpp_generate_reference.py", &args)?,
    };
    println!("{v}");
    Ok(Some(v))
}

/// A GGUF LoRA file written for the reference run, removed when dropped.
struct TempLora(PathBuf);

impl TempLora {
    /// Writes `adapter` for `model` in llama.cpp's GGUF LoRA layout (as `tunelab export
    /// gguf-lora` does) to a file in the temporary directory.
    fn write(adapter: &Path, model: &Model) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("tunelab-bench-lora-{}.gguf", std::process::id()));
        let set = AdapterSet::load_for(adapter, model)?;
        let file = Self(path);
        set.write_gguf_lora(model.config(), &file.0).with_context(|| format!("writing {} for the llama.cpp reference", file.0.display()))?;
        Ok(file)
    }
}

impl Drop for TempLora {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `tunelab bench generate`.
pub fn run_generate(a: GenerateBenchArgs) -> anyhow::Result<()> {
    let refs = References::find(&a.reference)?;
    let (model, decoding) = load(&a.model, a.adapter.as_deref(), a.weights, &a.device)?;
    let (mut tokens, mut seconds, mut prompt_s) = (0usize, 0.0, 0.0);
    let mut first = String::new();
    let mut answers = Vec::new();
    for p in PROMPTS {
        let prompt = model.template.render_prompt(None, p)?;
        let t = Instant::now();
        let out = Generator::new(&decoding, &model.tokenizer).generate(&prompt, &GenerationConfig::greedy(a.max_tokens), |_| {})?;
        seconds += t.elapsed().as_secs_f64();
        prompt_s += out.prompt_seconds;
        tokens += out.token_ids.len();
        if first.is_empty() {
            first = out.text.chars().take(200).collect();
        }
        answers.push(out.token_ids);
    }
    let peak_rss_mb = super::peak_rss_mb();
    drop(decoding);
    // Rounding weights: how many answers are still the exact model's, token for token
    // (decoded untimed with the exact weights and the same adapter).
    let same = if tunelab::DecodeWeights::from(a.weights).is_exact() {
        None
    } else {
        let (_, exact) = load(&a.model, a.adapter.as_deref(), DecodeWeights::F32, &a.device)?;
        let gen = Generator::new(&exact, &model.tokenizer);
        let mut same = 0;
        for (p, answer) in PROMPTS.iter().zip(&answers) {
            let out = gen.generate(&model.template.render_prompt(None, p)?, &GenerationConfig::greedy(a.max_tokens), |_| {})?;
            same += usize::from(&out.token_ids == answer);
        }
        Some(same)
    };
    let ours = json!({
        "impl": "tunelab", "adapter": a.adapter.as_ref().map(|p| p.display().to_string()), "weights": format!("{:?}", a.weights),
        "completion_tokens": tokens, "end_to_end_tokens_per_s": (tokens as f64 / seconds * 10.0).round() / 10.0,
        "prompt_seconds_total": (prompt_s * 1000.0).round() / 1000.0, "peak_rss_mb": peak_rss_mb, "first_output": first,
        "answers_equal_to_f32": same,
    });
    println!("{ours}");

    // With an adapter, llama.cpp runs with the same adapter (the like-for-like ratio) and
    // without it (what the adapter costs each).
    let lora = match (&refs, &a.adapter) {
        (Some(_), Some(dir)) => Some(TempLora::write(dir, &model)?),
        _ => None,
    };
    let theirs = llamacpp(refs.as_ref(), &a.model, a.max_tokens, lora.as_ref().map(|l| l.0.as_path()))?;
    let theirs_base = match lora {
        Some(_) => llamacpp(refs.as_ref(), &a.model, a.max_tokens, None)?,
        None => None,
    };
    let f = |v: &Value, k: &str| v[k].as_f64();
    let mut table = Table::new(
        format!(
            "greedy generation, single stream ({} prompts × ≤ {} tokens{})",
            PROMPTS.len(),
            a.max_tokens,
            super::machine::device_note(model.transformer.device(), theirs.is_some())
        ),
        &["model", "tunelab tok/s", "tunelab peak RSS MB", "answers equal to f32's", "llama.cpp tok/s", "llama.cpp peak RSS MB", "speed ratio"],
    );
    let label = match &a.adapter {
        Some(p) => format!("{} + {} ({:?} decoding)", a.model.display(), p.display(), a.weights),
        None => format!("{} ({:?} decoding)", a.model.display(), a.weights),
    };
    let same = same.map_or_else(|| "all (exact)".to_string(), |n| format!("{n} of {}", PROMPTS.len()));
    let mut row = |label: String, theirs: Option<&Value>| {
        let t = |k| theirs.and_then(|v| f(v, k));
        table.row(vec![
            label,
            num(f(&ours, "end_to_end_tokens_per_s"), 1),
            num(f(&ours, "peak_rss_mb"), 0),
            same.clone(),
            num(t("end_to_end_tokens_per_s"), 1),
            num(t("peak_rss_mb"), 0),
            ratio(f(&ours, "end_to_end_tokens_per_s"), t("end_to_end_tokens_per_s")),
        ]);
    };
    match &theirs_base {
        Some(base) => {
            row(format!("{label}, llama.cpp with the same adapter"), theirs.as_ref());
            row(format!("{label}, llama.cpp without it"), Some(base));
        }
        None => row(label, theirs.as_ref()),
    }
    table.print();
    Ok(())
}

/// Greedy answers to every prompt, decoded as `eval run` decodes a suite: continuous
/// batching over `batch` slots.
fn decode_all(decoding: &Transformer, model: &Model, ids: &[Vec<u32>], max_tokens: usize, batch: usize) -> anyhow::Result<Vec<Generation>> {
    let gen = Generator::new(decoding, &model.tokenizer);
    let (mut answers, mut failed) = (vec![None; ids.len()], None);
    gen.generate_continuous(
        ids,
        &GenerationConfig::greedy(max_tokens),
        batch,
        |_, _| {},
        |i, r| match r {
            Ok(g) => answers[i] = Some(g),
            Err(e) => failed = Some(format!("prompt {i}: {e}")),
        },
    )?;
    match failed {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(answers.into_iter().map(|g| g.expect("every prompt is reported")).collect()),
    }
}

/// Runs `tunelab bench eval`.
pub fn run_eval(a: EvalBenchArgs) -> anyhow::Result<()> {
    let refs = References::find(&a.reference)?;
    let (model, decoding) = load(&a.model, None, a.weights, &a.device)?;
    let data = match &a.data {
        Some(path) => Dataset::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => {
            let (name, cases) = tunelab_evalsuite::guard::FILES.iter().find(|(name, _)| *name == "cases.jsonl").expect("the guard suite has cases");
            Dataset::from_bytes(Path::new(name), cases.as_bytes(), &Default::default()).context("loading the built-in guard questions")?
        }
    };
    if data.examples.is_empty() {
        anyhow::bail!("{}: no prompts", data.path.display());
    }
    let prompts: Vec<String> = (0..a.prompts)
        .map(|i| {
            let ex = &data.examples[i % data.examples.len()];
            model.template.render(ex.prompt_messages(), true)
        })
        .collect::<tunelab::Result<_>>()?;
    let ids = prompts.iter().map(|p| model.tokenizer.encode_with_bos(p)).collect::<tunelab::Result<Vec<_>>>()?;
    let start = Instant::now();
    let answers = decode_all(&decoding, &model, &ids, a.max_tokens, a.batch)?;
    let seconds = start.elapsed().as_secs_f64();
    let tokens: usize = answers.iter().map(|g| g.token_ids.len()).sum();
    let prompt_tokens: usize = answers.iter().map(|g| g.prompt_tokens).sum();
    let cached_prompt_tokens: usize = answers.iter().map(|g| g.cached_prompt_tokens).sum();
    // Rounding weights: how many answers are still the exact model's, token for token.
    let same = if tunelab::DecodeWeights::from(a.weights).is_exact() {
        None
    } else {
        let exact = decode_all(&model.transformer, &model, &ids, a.max_tokens, a.batch)?;
        Some(answers.iter().zip(&exact).filter(|(a, b)| a.token_ids == b.token_ids).count())
    };
    let ours = json!({
        "impl": "tunelab", "prompts": a.prompts, "batch": a.batch, "weights": format!("{:?}", a.weights), "completion_tokens": tokens,
        "prompt_tokens": prompt_tokens, "cached_prompt_tokens": cached_prompt_tokens,
        "seconds": (seconds * 100.0).round() / 100.0, "tokens_per_s": (tokens as f64 / seconds * 10.0).round() / 10.0,
        "peak_rss_mb": super::peak_rss_mb(), "answers_equal_to_f32": same,
    });
    println!("{ours}");

    let theirs = llamacpp(refs.as_ref(), &a.model, a.max_tokens, None)?;
    let f = |v: &Value, k: &str| v[k].as_f64();
    let mut table = Table::new(
        format!(
            "evaluation generation: {} prompts × ≤ {} tokens, {} decoding together (llama.cpp: single stream{})",
            a.prompts,
            a.max_tokens,
            a.batch,
            super::machine::device_note(model.transformer.device(), theirs.is_some())
        ),
        &["weights", "tunelab tok/s", "tunelab seconds", "tunelab peak RSS MB", "answers equal to f32's", "llama.cpp tok/s (sequential)", "throughput ratio"],
    );
    let t = theirs.as_ref().and_then(|v| f(v, "end_to_end_tokens_per_s"));
    table.row(vec![
        tunelab::DecodeWeights::from(a.weights).name().to_string(),
        num(f(&ours, "tokens_per_s"), 1),
        num(f(&ours, "seconds"), 1),
        num(f(&ours, "peak_rss_mb"), 0),
        same.map_or_else(|| "all (exact)".to_string(), |n| format!("{n} of {}", a.prompts)),
        num(t, 1),
        ratio(f(&ours, "tokens_per_s"), t),
    ]);
    table.print();
    Ok(())
}
