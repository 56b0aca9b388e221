//! `tunelab bench train`: LoRA training steps (forward, backward, NaN check, AdamW) through
//! the trainer's own step function (`tunelab::train::step`), on random tokens at fixed
//! shapes (the workload of `torch_lora_reference.py`) and on a real dataset's batches.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tunelab::data::{encode_example, Batch, BatchPlan, Encoded};
use tunelab::lora::LoraConfig;
use tunelab::model::ModelConfig;
use tunelab::prelude::*;
use tunelab::train::{step, AdamW, StepOptions};

use super::reference::{run_worker, References};
use super::table::{num, ratio, Table};
use super::ReferenceArgs;
use crate::cli::device::{BaseDtype, DeviceArgs};
use clap::ValueEnum;

/// Options of `tunelab bench train`.
#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// Base model.
    #[arg(long, default_value = tunelab::model::DEFAULT_MODEL_FILE)]
    model: PathBuf,
    /// Random-token shapes `BATCHxSEQ`, comma-separated.
    #[arg(long, default_value = "4x256,4x448", value_delimiter = ',')]
    shapes: Vec<String>,
    /// Also train on this dataset's own batches (length-grouped, as the trainer batches).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Batch size on --data.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Timed steps per configuration.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Also measure the low-memory mode (layers recomputed in the backward pass).
    #[arg(long)]
    low_memory: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// How tunelab stores the frozen base weights (f32, or bf16 for GPUs).
    #[arg(long, value_enum, default_value = "f32")]
    base_dtype: BaseDtype,
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// Options of the training worker (one configuration, one process).
#[derive(Debug, Args)]
pub struct TrainWorkerArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Sequence length of random batches (ignored with --data).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    cutoff: usize,
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long)]
    low_memory: bool,
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long, value_enum, default_value = "f32")]
    base_dtype: BaseDtype,
}

/// Runs the configurations in child processes and prints the table.
pub fn run(a: TrainBenchArgs) -> anyhow::Result<()> {
    let refs = References::find(&a.reference)?;
    let missing = match &refs {
        Some(r) => r.missing_modules(&["torch", "transformers", "peft", "gguf"])?,
        None => Vec::new(),
    };
    if let (Some(r), false) = (&refs, missing.is_empty()) {
        eprintln!("{}", r.missing_message(&missing));
    }
    let refs = refs.filter(|_| missing.is_empty());
    let (gemm, device_note) = {
        let device = a.device.device()?;
        let dtype = if a.base_dtype == BaseDtype::Bf16 && !device.is_cpu() { DType::BF16 } else { DType::F32 };
        (super::machine::gemm_peak_gflops(&device, dtype)?, super::machine::device_note(&device, refs.is_some()))
    };
    // The references get the file itself (they do not know tunelab's model lookup).
    let model = tunelab::model::resolve_model_path(&a.model)?.display().to_string();
    let base = |extra: &[String]| -> Vec<String> {
        let base_dtype = base_dtype_name(a.base_dtype);
        let mut v = vec!["train".into(), "--model".into(), model.clone(), "--steps".into(), a.steps.to_string()];
        v.extend(["--device".into(), a.device.device.clone(), "--base-dtype".into(), base_dtype]);
        v.extend_from_slice(extra);
        v
    };
    // (label, worker args, torch batch × seq)
    let mut configs: Vec<(String, Vec<String>)> = Vec::new();
    for shape in &a.shapes {
        let (b, t) = parse_shape(shape)?;
        configs.push((format!("random {b}×{t}"), base(&["--batch".into(), b.to_string(), "--seq".into(), t.to_string()])));
    }
    if let Some(data) = &a.data {
        let name = data.file_name().map_or_else(|| data.display().to_string(), |n| n.to_string_lossy().into_owned());
        configs.push((format!("{name}, batch {}", a.batch), base(&["--data".into(), data.display().to_string(), "--batch".into(), a.batch.to_string()])));
    }
    if a.low_memory {
        let low: Vec<_> = configs.iter().map(|(l, args)| (format!("{l}, low-memory"), [args.clone(), vec!["--low-memory".into()]].concat())).collect();
        configs.extend(low);
    }

    let mut table = Table::new(
        format!("LoRA training step (r=8, all linear projections; {} timed steps; GEMM peak {gemm:.0} GFLOP/s{device_note})", a.steps),
        &[
            "workload",
            "tunelab tok/s",
            "tunelab peak RSS MB",
            "GFLOP/s (% of GEMM peak)",
            "torch+peft tok/s",
            "torch peak RSS MB",
            "speed ratio",
            "memory ratio",
        ],
    );
    for (label, args) in configs {
        eprintln!("bench train: {label}");
        let ours = run_worker(&args)?;
        println!("{ours}");
        let (b, t) = (ours["batch"].as_u64().unwrap_or(4), ours["seq"].as_f64().unwrap_or(256.0).round() as u64);
        let theirs = match &refs {
            Some(r) => {
                let v = r.run(
                    "torch_lora_reference.py",
                    &[model.clone(), "--batch".into(), b.to_string(), "--seq".into(), t.to_string(), "--steps".into(), a.steps.to_string()],
                )?;
                println!("{v}");
                Some(v)
            }
            None => None,
        };
        let f = |v: &Value, k: &str| v[k].as_f64();
        let gflops = f(&ours, "gflops").map(|g| format!("{g:.0} ({:.0} %)", 100.0 * g / gemm)).unwrap_or_else(|| "–".into());
        let torch_label = if ours["data"].is_string() { format!(" (torch at {b}×{t})") } else { String::new() };
        table.row(vec![
            format!("{label}{torch_label}"),
            num(f(&ours, "tokens_per_s"), 1),
            num(f(&ours, "peak_rss_mb"), 0),
            gflops,
            num(theirs.as_ref().and_then(|v| f(v, "tokens_per_s")), 1),
            num(theirs.as_ref().and_then(|v| f(v, "peak_rss_mb")), 0),
            ratio(f(&ours, "tokens_per_s"), theirs.as_ref().and_then(|v| f(v, "tokens_per_s"))),
            ratio(f(&ours, "peak_rss_mb"), theirs.as_ref().and_then(|v| f(v, "peak_rss_mb"))),
        ]);
    }
    table.print();
    Ok(())
}

fn parse_shape(s: &str) -> anyhow::Result<(usize, usize)> {
    let (b, t) = s.split_once(['x', '×']).with_context(|| format!("shape {s:?}: expected BATCHxSEQ, e.g. 4x256"))?;
    Ok((b.trim().parse().with_context(|| format!("shape {s:?}: batch"))?, t.trim().parse().with_context(|| format!("shape {s:?}: sequence length"))?))
}

/// Floating-point operations of one LoRA training step on `b × t` positions with
/// `labelled` output positions: frozen projections forward and input-gradient (no weight
/// gradient), the LoRA products, causal attention (forward, and backward at twice that),
/// and the output head forward and input-gradient on labelled rows.
fn step_flops(cfg: &ModelConfig, b: usize, t: usize, labelled: usize, rank: usize) -> f64 {
    let (h, f) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let d = cfg.head_dim() as f64;
    let (nh, nkv) = (cfg.num_attention_heads as f64, cfg.num_key_value_heads as f64);
    let layers = cfg.num_hidden_layers as f64;
    let n = (b * t) as f64;
    let dims = [(h, nh * d), (h, nkv * d), (h, nkv * d), (nh * d, h), (h, f), (h, f), (f, h)];
    let frozen: f64 = dims.iter().map(|(i, o)| i * o).sum();
    let lora: f64 = dims.iter().map(|(i, o)| rank as f64 * (i + o)).sum();
    let linear = n * (4.0 * frozen + 6.0 * lora);
    let attention = 3.0 * b as f64 * 2.0 * (t * t) as f64 * d * nh;
    let head = 4.0 * labelled as f64 * cfg.vocab_size as f64 * h;
    layers * (linear + attention) + head
}

/// One configuration in this process: prints a JSON line.
pub fn worker(a: TrainWorkerArgs) -> anyhow::Result<()> {
    let mut model = a.device.load_model(&a.model)?;
    // Training never decodes: free the file's blocks kept for decoding steps.
    model.transformer = a.base_dtype.apply(&model.transformer.without_packed_weights())?;
    let lora = LoraConfig::default();
    let rank = lora.r;
    let adapter = AdapterSet::new(&model.transformer, lora, 0)?;
    let adapted = adapter.apply(&model.transformer.with_fresh_ids()?);
    let mut opt = AdamW::new(adapter.vars(), 0.9, 0.999, 1e-8, 0.0)?;
    let batches = match &a.data {
        Some(path) => data_batches(&model, path, a.batch, a.cutoff, a.warmup + a.steps)?,
        None => vec![random_batch(model.config().vocab_size as u32, a.batch, a.seq, model.transformer.device())?],
    };
    // As the torch reference: lr 5e-5, no weight decay, no clipping; one batch per step.
    let opts = StepOptions { lr: 5e-5, max_grad_norm: 0.0, low_memory: a.low_memory };
    let mut train_step = |batch: &Batch| -> anyhow::Result<f64> { Ok(step(&adapted, &mut opt, std::slice::from_ref(batch), opts)?.loss) };
    let pick = |i: usize| &batches[i % batches.len()];
    for i in 0..a.warmup {
        train_step(pick(i))?;
    }
    let (mut seconds, mut positions, mut real, mut flops, mut loss) = (Vec::new(), 0usize, 0usize, 0.0, 0.0);
    for i in a.warmup..a.warmup + a.steps {
        let batch = pick(i);
        let (b, t) = batch.input_ids.dims2()?;
        let start = Instant::now();
        loss = train_step(batch)?;
        seconds.push(start.elapsed().as_secs_f64());
        positions += b * t;
        real += batch.tokens;
        flops += step_flops(model.config(), b, t, batch.label_tokens.max(if a.data.is_none() { b * (t - 1) } else { 0 }), rank);
    }
    let total: f64 = seconds.iter().sum();
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "impl": "tunelab", "matmul": tunelab::model::matmul::matmul_backend(), "low_memory": a.low_memory,
            "device": a.device.device, "base_dtype": base_dtype_name(a.base_dtype),
            "data": a.data.as_ref().map(|p| p.display().to_string()),
            "batch": a.batch, "seq": (positions as f64 / a.steps as f64 / a.batch as f64 * 10.0).round() / 10.0,
            "step_s_median": (sorted[sorted.len() / 2] * 1e4).round() / 1e4,
            "tokens_per_s": (positions as f64 / total * 10.0).round() / 10.0,
            "real_tokens_per_s": (real as f64 / total * 10.0).round() / 10.0,
            "gflops": (flops / total / 1e9 * 10.0).round() / 10.0,
            "loss": (loss * 1e4).round() / 1e4,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}

/// A random batch whose labels are its ids (every position learned), as the torch script.
fn random_batch(vocab: u32, b: usize, t: usize, device: &Device) -> anyhow::Result<Batch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..vocab)).collect();
    let labels: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Ok(Batch { input_ids: Tensor::from_vec(ids, (b, t), device)?, labels: Tensor::from_vec(labels, (b, t), device)?, tokens: b * t, label_tokens: b * (t - 1) })
}

/// The first `n` batches of the trainer's first-epoch plan over `path`.
fn data_batches(model: &Model, path: &std::path::Path, batch: usize, cutoff: usize, n: usize) -> anyhow::Result<Vec<Batch>> {
    let data = Dataset::load(path).with_context(|| format!("loading {}", path.display()))?;
    let opts = tunelab::data::EncodeOptions { cutoff_len: cutoff, train_on_prompt: false };
    let encoded: Vec<Encoded> = data.examples.iter().map(|e| encode_example(e, &model.template, &model.tokenizer, &opts)).collect::<tunelab::Result<_>>()?;
    let lengths: Vec<usize> = encoded.iter().map(|e| e.input_ids.len()).collect();
    let plan = BatchPlan::new(&lengths, batch, 42, 0);
    plan.batches
        .iter()
        .take(n)
        .map(|idx| {
            let items: Vec<&Encoded> = idx.iter().map(|&i| &encoded[i]).collect();
            Ok(Batch::collate(&items, model.tokenizer.pad_id(), model.transformer.device())?)
        })
        .collect()
}

/// `--base-dtype`'s value as written on the command line.
fn base_dtype_name(d: BaseDtype) -> String {
    d.to_possible_value().expect("every dtype has a name").get_name().to_string()
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    tunelab::train::peak_rss_bytes().map(|b| (b as f64 / 1048576.0).round())
}
