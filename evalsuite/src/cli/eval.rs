//! `tunelab eval`: build suites, run them against a model, an endpoint or a predictions file,
//! and summarize runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tunelab_evalsuite::backend::http::HttpBackend;
use tunelab_evalsuite::backend::local::{LocalBackend, DEFAULT_BATCH};
use tunelab_evalsuite::backend::predictions::PredictionsBackend;
use tunelab_evalsuite::backend::Backend;
use tunelab_evalsuite::chat::HttpConfig;
use tunelab_evalsuite::run::{self, summary, RunEvent, RunOptions};
use tunelab_evalsuite::scorers::JudgePolicy;
use tunelab_evalsuite::suite::{new_suite, NewSuite, Suite};

use super::decoding::{DecodeWeights, DecodingArgs};
use super::device::DeviceArgs;

/// `tunelab eval …`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Evaluate a model (± adapter), an endpoint or a predictions file on a suite.
    Run(Box<RunArgs>),
    /// Per-category scores with 95 % intervals for a run directory.
    Summary(SummaryArgs),
    /// Join the runs of a sharded evaluation (`eval run --shard I/N`) into one run.
    Merge(MergeArgs),
    /// Compare stored runs with a baseline: paired statistics as HTML, JSON or Markdown.
    Report(super::compare::ReportArgs),
    /// Decide whether a candidate run may ship: exit 0 pass, 1 regressed, 2 data error.
    Gate(super::compare::GateArgs),
    /// Build suites.
    #[command(subcommand)]
    Suite(SuiteCommand),
}

/// Options of `eval run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The suite TOML.
    #[arg(long)]
    suite: PathBuf,
    /// A local model: GGUF file or HF directory.
    #[arg(long, conflicts_with_all = ["endpoint", "predictions"])]
    model: Option<PathBuf>,
    /// A LoRA adapter directory (PEFT) applied to --model; repeat it to evaluate several
    /// adapters on one loaded base (one run each, named NAME-ADAPTER).
    #[arg(long = "adapter", requires = "model")]
    adapters: Vec<PathBuf>,
    /// With --adapter: also evaluate the base model alone (a run named NAME-base).
    #[arg(long, requires = "adapters")]
    with_base: bool,
    /// An OpenAI-compatible endpoint (base URL).
    #[arg(long, requires = "api_models", conflicts_with = "predictions")]
    endpoint: Option<String>,
    /// The model name the endpoint serves; repeat it to evaluate several models or LoRA
    /// adapters one server serves by name (vLLM's `--lora-modules name=path`), one run each,
    /// named NAME-MODEL.
    #[arg(long = "api-model")]
    api_models: Vec<String>,
    /// Environment variable holding the endpoint's API key.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Score predictions made elsewhere (JSONL: id + output, or LLaMA-Factory's prompt/predict/label).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Run name (default: model[+adapter]-timestamp).
    #[arg(long)]
    name: Option<String>,
    /// Folder for run directories.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Only these categories (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// At most N cases per category.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate only slice I of N (cases assigned by a hash of category and id, the same on
    /// every machine); join the slices' runs with `eval merge`.
    #[arg(long, value_name = "I/N", value_parser = tunelab_evalsuite::run::record::Shard::parse)]
    shard: Option<tunelab_evalsuite::run::record::Shard>,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Weights the local backend generates with: `f32` (the default) is exactly the trained
    /// model; `bf16` rounds weights and activations for about 1.5× the throughput on CPUs
    /// with AVX-512 BF16, and the run records it.
    #[arg(long, value_enum, default_value_t = DecodeWeights::F32)]
    weights: DecodeWeights,
    #[command(flatten)]
    device: DeviceArgs,
    /// Cases the local backend decodes together (continuous batching, at most 64; answers
    /// do not depend on it).
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Requests in flight (endpoint).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds per request (endpoint).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Attempts per request, retried with backoff on 429/5xx/connection errors (endpoint).
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Largest reply body read from an endpoint or judge, in MiB (a longer one is an error).
    #[arg(long, value_name = "MB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_response_mb: u64,
    /// Generation cache file (default: OUT/.cache/generations.jsonl).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Replace an existing run of the same name.
    #[arg(long)]
    overwrite: bool,
    /// An endpoint rubric judges may send outputs to (repeatable); a judge check naming any
    /// other endpoint is refused before generation.
    #[arg(long = "allow-judge-endpoint", value_name = "URL")]
    allow_judge_endpoints: Vec<String>,
    /// Environment variable whose value judges send as their API key (rubrics cannot name one).
    #[arg(long, value_name = "VAR")]
    judge_api_key_env: Option<String>,
    /// Exit successfully even when some checks could not be computed (by default a run
    /// with errored checks is written, then reported as a failure).
    #[arg(long)]
    allow_errors: bool,
}

/// Options of `eval summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Run directories.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of `eval merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard runs (slices 1..N of one N, each once).
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Name of the merged run.
    #[arg(long)]
    name: String,
    /// Folder for the merged run directory.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Replace an existing run directory of the same name.
    #[arg(long)]
    overwrite: bool,
}

/// `eval suite …`.
#[derive(Debug, Subcommand)]
pub enum SuiteCommand {
    /// Write a suite TOML for a training split: training cases become `seen`, held-out
    /// cases are checked for leaks into training.
    New(NewSuiteArgs),
}

/// Options of `eval suite new`.
#[derive(Debug, Args)]
pub struct NewSuiteArgs {
    /// The training file (its cases are `seen`).
    #[arg(long)]
    train: PathBuf,
    /// Held-out cases (an error if any appears in training).
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// Out-of-domain cases.
    #[arg(long)]
    ood: Option<PathBuf>,
    /// More case files, sorted into seen / heldout case by case (repeatable).
    #[arg(long = "cases")]
    cases: Vec<PathBuf>,
    /// Rubric for the in-domain and out-of-domain sets.
    #[arg(long)]
    rubric: PathBuf,
    /// Include the shipped guard suite (written out next to the suite, see --guard-dir).
    #[arg(long)]
    guard: bool,
    /// Where --guard writes the guard suite's files (default: `guard/` beside --out); files
    /// already there are kept when identical and refused when different.
    #[arg(long, requires = "guard")]
    guard_dir: Option<PathBuf>,
    /// Evaluate only the first N training cases as `seen`.
    #[arg(long)]
    seen_limit: Option<usize>,
    /// Suite name (default: the output file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the suite TOML.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `tunelab eval …`; `Ok(false)` means "ran, but report failure".
pub fn run(cmd: EvalCommand) -> anyhow::Result<bool> {
    match cmd {
        EvalCommand::Run(args) => run_suite(*args),
        EvalCommand::Report(args) => super::compare::report(args),
        EvalCommand::Gate(args) => super::compare::gate(args),
        EvalCommand::Merge(args) => {
            let command = recorded_command();
            let merged = tunelab_evalsuite::run::shards::merge_shards(&args.shards, &args.out, &args.name, args.overwrite, &command)?;
            println!("merged {} shards: {} cases, {} result rows → {}", args.shards.len(), merged.cases, merged.rows, merged.dir.display());
            Ok(true)
        }
        EvalCommand::Summary(args) => {
            let mut all = Vec::new();
            for dir in &args.runs {
                let s = summary::summarize(dir)?;
                if !args.json {
                    println!("{}", summary::render_text(&s));
                }
                all.push(s);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            }
            Ok(true)
        }
        EvalCommand::Suite(SuiteCommand::New(args)) => {
            let name = args.name.clone().unwrap_or_else(|| args.out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "suite".into()));
            let spec = NewSuite {
                name,
                train: args.train,
                heldout: args.heldout,
                ood: args.ood,
                auto: args.cases,
                rubric: args.rubric,
                guard: match args.guard {
                    true => {
                        let beside = args.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("guard");
                        Some(tunelab_evalsuite::guard::export(args.guard_dir.as_deref().unwrap_or(&beside))?)
                    }
                    false => None,
                },
                seen_limit: args.seen_limit,
            };
            let suite = new_suite(&spec, &args.out)?;
            let counts: Vec<String> = suite.category_counts().iter().map(|(c, n)| format!("{c} {n}")).collect();
            println!("wrote {} ({} cases: {})", args.out.display(), suite.cases.len(), counts.join(", "));
            Ok(true)
        }
    }
}

fn run_suite(args: RunArgs) -> anyhow::Result<bool> {
    let suite = Suite::load(&args.suite)?;
    let counts: Vec<String> = suite.category_counts().iter().map(|(c, n)| format!("{c} {n}")).collect();
    eprintln!("suite {} ({}): {}", suite.name, suite.path.display(), counts.join(", "));
    let device = args.device.device()?;
    match (&args.model, &args.endpoint, &args.predictions) {
        (Some(model), None, None) => {
            // The base is loaded once; each adapter is applied on it in turn.
            let mut backend = LocalBackend::load_on(model, &device)?.with_batch(args.batch)?.with_weights(args.weights.into())?;
            let mut targets: Vec<Option<&Path>> = Vec::new();
            if args.adapters.is_empty() || args.with_base {
                targets.push(None);
            }
            targets.extend(args.adapters.iter().map(|a| Some(a.as_path())));
            let several = targets.len() > 1;
            let names: Vec<String> = targets.iter().map(|a| run_name(&args, *a, several)).collect();
            for (i, name) in names.iter().enumerate() {
                if let Some(j) = names[..i].iter().position(|n| n == name) {
                    let show = |a: Option<&Path>| a.map_or_else(|| "the base model".to_string(), |a| a.display().to_string());
                    bail!(
                        "{} and {} would both be written as run {name:?}; rename one adapter directory or run them separately",
                        show(targets[j]),
                        show(targets[i])
                    );
                }
            }
            let mut errored = 0;
            for (adapter, name) in targets.into_iter().zip(names) {
                backend.set_adapter(adapter)?;
                errored += run_one(&suite, &backend, &args, name)?;
            }
            Ok(errors_allowed(errored, &args))
        }
        _ if args.weights != DecodeWeights::F32 => bail!("--weights applies to a local --model only"),
        _ if !device.is_cpu() => bail!("--device applies to a local --model only"),
        (None, Some(endpoint), None) => {
            if args.api_models.is_empty() {
                bail!("--endpoint needs --api-model");
            }
            let several = args.api_models.len() > 1;
            let names: Vec<String> = args.api_models.iter().map(|m| api_run_name(&args, m, several)).collect();
            if let Some((i, name)) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
                bail!("--api-model {} would be written as run {name:?} a second time; give each model once", args.api_models[i]);
            }
            let mut errored = 0;
            for (model, name) in args.api_models.iter().zip(names) {
                let mut cfg = HttpConfig::new(endpoint, model.clone());
                cfg.api_key_env = args.api_key_env.clone();
                cfg.concurrency = args.concurrency.max(1);
                cfg.timeout = Duration::from_secs(args.timeout);
                cfg.attempts = args.attempts.max(1);
                cfg.max_body_bytes = args.max_response_mb << 20;
                errored += run_one(&suite, &HttpBackend::connect(cfg)?, &args, name)?;
            }
            Ok(errors_allowed(errored, &args))
        }
        (None, None, Some(file)) => {
            let errored = run_one(&suite, &PredictionsBackend::load(file)?, &args, run_name(&args, None, false))?;
            Ok(errors_allowed(errored, &args))
        }
        _ => bail!("give exactly one of --model, --endpoint (with --api-model) or --predictions"),
    }
}

/// Whether the command succeeded given `errored` checks across its runs (says why not).
fn errors_allowed(errored: usize, args: &RunArgs) -> bool {
    if errored > 0 && !args.allow_errors {
        eprintln!("error: {errored} check(s) could not be computed (rows with error = true say why); the run is written, but its scores leave those checks out. Pass --allow-errors to accept this.");
        return false;
    }
    true
}

/// Runs the suite against one backend and prints the run's summary; returns how many checks
/// errored.
fn run_one(suite: &Suite, backend: &dyn Backend, args: &RunArgs, name: String) -> anyhow::Result<usize> {
    let opts = RunOptions {
        name,
        out: args.out.clone(),
        decoding: args.decoding.config(),
        cache: args.cache.clone(),
        categories: args.categories.clone(),
        limit_per_category: args.limit,
        shard: args.shard,
        overwrite: args.overwrite,
        judges: JudgePolicy {
            allowed_endpoints: args.allow_judge_endpoints.clone(),
            api_key_env: args.judge_api_key_env.clone(),
            max_body_bytes: Some(args.max_response_mb << 20),
        },
        command: recorded_command(),
    };
    if !opts.judges.allowed_endpoints.is_empty() {
        let key = opts.judges.api_key_env.as_deref().map_or_else(|| "no key".to_string(), |v| format!("the key in ${v}"));
        eprintln!("judges may send outputs to {} with {key}", opts.judges.allowed_endpoints.join(", "));
    }
    let mut bar = ProgressBar::hidden();
    let outcome = run::execute(suite, backend, &opts, &mut |event| match event {
        RunEvent::CacheLinesSkipped(n) => eprintln!("note: skipped {n} unreadable line(s) in the generation cache (a run interrupted mid-write)"),
        RunEvent::Generating { pending, cached } => bar = generation_bar(pending as u64, cached),
        RunEvent::Generated { done, .. } => bar.set_position(done as u64),
        RunEvent::Scoring { .. } => bar.finish_and_clear(),
    })?;
    eprintln!(
        "wrote {} — {} cases ({} from cache), {} result rows; generation {:.1}s, scoring {:.1}s",
        outcome.dir.display(),
        outcome.cases,
        outcome.cached,
        outcome.rows,
        outcome.generation_s,
        outcome.scoring_s
    );
    println!("{}", summary::render_text(&summary::summarize(&outcome.dir)?));
    Ok(outcome.errored_checks)
}

/// The progress bar of a run's generation phase.
fn generation_bar(pending: u64, cached: usize) -> ProgressBar {
    let bar = ProgressBar::new(pending);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} cases, {per_sec}, ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(if cached > 0 { format!("generating ({cached} cached)") } else { "generating".into() });
    bar
}

fn stem(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `--name` as given (suffixed with the adapter, or `base`, when one command makes several
/// runs), else `model[+adapter]-timestamp`.
fn run_name(args: &RunArgs, adapter: Option<&Path>, several: bool) -> String {
    match &args.name {
        Some(name) if several => format!("{name}-{}", adapter.map_or_else(|| "base".to_string(), stem)),
        Some(name) => name.clone(),
        None => default_name(args, adapter),
    }
}

/// The run name for served model `model`: `--name` (with `-MODEL` when several models
/// are evaluated), else `model-timestamp`.
fn api_run_name(args: &RunArgs, model: &str, several: bool) -> String {
    let safe = model.replace(['/', '\\', ':'], "_");
    match &args.name {
        Some(name) if several => format!("{name}-{safe}"),
        Some(name) => name.clone(),
        None => stamped(safe),
    }
}

fn default_name(args: &RunArgs, adapter: Option<&Path>) -> String {
    let file_stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut name = match (&args.model, &args.predictions) {
        (Some(m), _) => file_stem(m),
        (_, Some(p)) => file_stem(p),
        _ => "run".into(),
    };
    if let Some(a) = adapter {
        name.push('+');
        name.push_str(&stem(a));
    }
    stamped(name)
}

/// `name-YYYYMMDDTHHMMSS`.
fn stamped(name: String) -> String {
    let stamp = run::now_utc().1.replace([':', '-'], "");
    format!("{name}-{}", stamp.trim_end_matches('Z'))
}

/// The command line as run records keep it: URLs without their `user:password@` part (an
/// endpoint's password must not end up in `run.json`, which is shared with reports).
fn recorded_command() -> String {
    std::env::args().map(|a| if a.contains("://") { tunelab_evalsuite::chat::without_credentials(&a) } else { a }).collect::<Vec<_>>().join(" ")
}
