//! The training loop. Phases per optimiser step: schedule → forward/backward over the
//! micro-batches → check for NaN → clip → AdamW step → log → evaluate → checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::checkpoint::{latest_checkpoint, Checkpoint, TrainerState};
use super::config::TrainConfig;
use super::log::{format_duration, LogRecord, TrainerLog};
use super::loss::{causal_lm_loss_and_grads, masked_cross_entropy};
use super::memory::{available_memory_bytes, mib, peak_rss_bytes, rss_bytes, MemoryEstimate};
use super::optim::AdamW;
use super::schedule::lr_at;
use crate::data::{encode_example, Batch, BatchPlan, Dataset, Encoded, ValidationOptions, ValidationReport};
use crate::display::{LineChart, Series};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lora::AdapterSet;
use crate::model::{Model, Transformer};

/// Something that happened during training, streamed to the caller's callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// Training is about to start (or resume).
    Started {
        /// Steps planned.
        total_steps: usize,
        /// Step training starts from (0 unless resumed).
        start_step: usize,
        /// Examples used.
        examples: usize,
        /// Invalid records dropped (with `skip_invalid`).
        skipped: usize,
        /// Trainable parameters.
        trainable_params: usize,
    },
    /// One optimiser step finished.
    Step {
        /// Steps done.
        step: usize,
        /// Steps planned.
        total_steps: usize,
        /// Fractional epoch.
        epoch: f64,
        /// Training loss.
        loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Tokens per second in this step.
        tokens_per_second: f64,
        /// Seconds since (re)start.
        elapsed: f64,
        /// Estimated seconds left.
        eta: f64,
    },
    /// The memory plan, before the first step.
    Memory {
        /// Estimated MiB training needs beyond the loaded model.
        estimate_mib: u64,
        /// MiB the machine had available (None where unknown).
        available_mib: Option<u64>,
        /// Whether activations are recomputed layer by layer.
        low_memory: bool,
    },
    /// An epoch ended (or training ended inside one).
    EpochEnd {
        /// The epoch (1-based).
        epoch: usize,
        /// Peak resident memory of this process so far, MiB.
        peak_rss_mib: Option<u64>,
        /// Resident memory now, MiB.
        rss_mib: Option<u64>,
    },
    /// Held-out loss was computed.
    Eval {
        /// After this step.
        step: usize,
        /// Mean held-out loss.
        eval_loss: f64,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// At this step.
        step: usize,
        /// Its directory.
        dir: PathBuf,
    },
}

/// How training ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainStatus {
    /// Every planned step ran.
    Completed,
    /// Cancelled (Ctrl-C, notebook interrupt); a checkpoint holds the state to resume from.
    Interrupted {
        /// The checkpoint written on the way out.
        checkpoint: PathBuf,
    },
}

/// The result of a training run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Completed or interrupted.
    pub status: TrainStatus,
    /// The trained adapter.
    pub adapter: AdapterSet,
    /// Steps done.
    pub steps: usize,
    /// Every log record of the run (including a resumed run's earlier ones).
    pub history: Vec<LogRecord>,
    /// Invalid records dropped.
    pub skipped: usize,
    /// The output directory.
    pub out_dir: PathBuf,
}

impl TrainOutcome {
    /// Training losses by step.
    pub fn losses(&self) -> Vec<(usize, f64)> {
        self.history.iter().filter_map(|r| r.loss.map(|l| (r.current_steps, l))).collect()
    }

    /// Held-out losses by step.
    pub fn eval_losses(&self) -> Vec<(usize, f64)> {
        self.history.iter().filter_map(|r| r.eval_loss.map(|l| (r.current_steps, l))).collect()
    }
}

/// Trains a LoRA adapter on a base model.
pub struct Trainer<'a> {
    model: &'a Model,
    config: TrainConfig,
    out_dir: PathBuf,
    cancel: Arc<AtomicBool>,
    resume: bool,
}

/// The settings and data fingerprint saved as `train_config.json`.
#[derive(Serialize)]
struct SavedConfig<'a> {
    #[serde(flatten)]
    config: &'a TrainConfig,
    base_model: String,
    train_data: String,
    train_data_sha256: &'a str,
    eval_data: Option<String>,
    eval_data_sha256: Option<&'a str>,
    examples: usize,
    skipped_invalid: usize,
    tunelab_version: &'static str,
}

impl<'a> Trainer<'a> {
    /// A trainer writing into `out_dir`. It stops gracefully when the process-wide
    /// [`crate::notebook::interrupt_flag`] is set (a notebook interrupt), unless given its
    /// own flag with [`Trainer::with_cancel_flag`].
    pub fn new(model: &'a Model, config: TrainConfig, out_dir: impl Into<PathBuf>) -> Self {
        Self { model, config, out_dir: out_dir.into(), cancel: crate::notebook::interrupt_flag(), resume: false }
    }

    /// Uses `flag` for cancellation: when it becomes true the trainer saves a checkpoint at
    /// the next step boundary and returns [`TrainStatus::Interrupted`].
    pub fn with_cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = flag;
        self
    }

    /// Continue from the latest checkpoint in the output directory (if there is one).
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The cancellation flag (set it to stop training gracefully).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Runs training on `train` (and reports held-out loss on `eval`), calling `on_event`
    /// after each step.
    pub fn run(&self, train: &Dataset, eval: Option<&Dataset>, mut on_event: impl FnMut(&TrainEvent)) -> Result<TrainOutcome> {
        let cfg = &self.config;
        cfg.validate().map_err(Error::InvalidArgument)?;
        // An interrupt that arrived before this run (e.g. stopping an earlier cell) is spent.
        self.cancel.store(false, Ordering::SeqCst);
        let (tok, template) = (&self.model.tokenizer, &self.model.template);
        fsutil::create_dir_all(&self.out_dir)?;

        // Data: refuse invalid records unless told to skip them — never drop silently.
        let report = ValidationReport::build(train, eval, None, &ValidationOptions { cutoff_len: cfg.cutoff_len, ..Default::default() })?;
        let bad_lines = report.error_lines();
        if !bad_lines.is_empty() && !cfg.skip_invalid {
            let first = report.issues.iter().find(|i| i.severity == crate::data::Severity::Error).map(|i| i.to_string()).unwrap_or_default();
            return Err(Error::DatasetInvalid { path: train.path.clone(), errors: report.error_count(), first });
        }
        let kept: Vec<_> = train.examples.iter().filter(|e| !bad_lines.contains(&e.source.line)).collect();
        let skipped = report.records - kept.len();
        if kept.is_empty() {
            return Err(Error::InvalidArgument(format!("{}: no usable examples", train.path.display())));
        }
        let opts = cfg.encode_options();
        let encoded: Vec<Encoded> = kept.iter().map(|e| encode_example(e, template, tok, &opts)).collect::<Result<_>>()?;
        let eval_encoded: Vec<Encoded> = match eval {
            Some(ev) => ev.examples.iter().map(|e| encode_example(e, template, tok, &opts)).collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let lengths: Vec<usize> = encoded.iter().map(|e| e.input_ids.len()).collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);

        // Adapter and optimiser.
        let mut lora = cfg.lora.clone();
        lora.base_model_name_or_path = Some(self.model.path.display().to_string());
        let adapter = AdapterSet::new(&self.model.transformer, lora, cfg.seed)?;
        // Tensor ids must come from one copy of candle for backprop (see with_fresh_ids).
        let base = self.model.transformer.with_fresh_ids()?;
        let adapted = adapter.apply(&base);
        let vars = adapter.vars();
        let mut opt = AdamW::new(vars.clone(), cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay)?;
        // Before anything is written: a run that cannot fit is refused with nothing changed.
        self.check_memory(&adapter, cfg.batch_size.min(encoded.len()) * longest, longest, &mut on_event)?;

        // Plan.
        let batches_per_epoch = encoded.len().div_ceil(cfg.batch_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.grad_accum);
        let mut total_steps = steps_per_epoch * cfg.epochs.max(1);
        if cfg.max_steps > 0 {
            total_steps = if cfg.epochs == 0 { cfg.max_steps } else { total_steps.min(cfg.max_steps) };
        }
        let warmup = (total_steps as f64 * cfg.warmup_ratio).ceil() as usize;

        // Fresh start or resume.
        let log_path = self.out_dir.join("trainer_log.jsonl");
        let mut state = TrainerState { global_step: 0, total_steps, epoch: 0, batch_in_epoch: 0, dataset_sha256: train.sha256.clone(), seed: cfg.seed };
        let resumed_from = if self.resume { latest_checkpoint(&self.out_dir) } else { None };
        if let Some(ckpt) = &resumed_from {
            let saved = ckpt.restore(&self.model.transformer, &adapter, &mut opt)?;
            if saved.dataset_sha256 != train.sha256 {
                return Err(Error::InvalidArgument(format!(
                    "{}: the training data changed since the checkpoint {} was written; resume with the same data or start a new output directory",
                    train.path.display(),
                    ckpt.dir.display()
                )));
            }
            state = TrainerState { total_steps, ..saved };
            TrainerLog::truncate_after(&log_path, state.global_step)?;
        } else {
            fsutil::write_atomic(&log_path, b"")?;
        }
        let mut log = TrainerLog::open(&log_path)?;
        on_event(&TrainEvent::Started {
            total_steps,
            start_step: state.global_step,
            examples: encoded.len(),
            skipped,
            trainable_params: adapter.num_parameters(),
        });

        let start = Instant::now();
        let start_step = state.global_step;
        let mut last_checkpoint: Option<PathBuf> = resumed_from.map(|c| c.dir);
        'epochs: while state.global_step < total_steps {
            let plan = BatchPlan::new(&lengths, cfg.batch_size, cfg.seed, state.epoch);
            let steps: Vec<&[Vec<usize>]> = plan.batches.chunks(cfg.grad_accum).collect();
            let first_step = state.batch_in_epoch / cfg.grad_accum;
            for micro in steps.into_iter().skip(first_step) {
                // Cancellation is honoured between steps, after saving where we are.
                if self.cancel.load(Ordering::SeqCst) {
                    let ckpt = Checkpoint::save(&self.out_dir, &adapter, &opt, &state)?;
                    on_event(&TrainEvent::Checkpoint { step: state.global_step, dir: ckpt.dir.clone() });
                    self.finish(train, eval, &report, skipped, &adapter)?;
                    return Ok(self.outcome(TrainStatus::Interrupted { checkpoint: ckpt.dir }, adapter, &state, skipped, &log_path)?);
                }
                let step_start = Instant::now();
                let lr = lr_at(state.global_step, total_steps, warmup, cfg.learning_rate);

                // Forward/backward over the micro-batches, summing gradients.
                let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
                let (mut loss_sum, mut tokens) = (0.0, 0);
                for batch_idx in micro {
                    let items: Vec<&Encoded> = batch_idx.iter().map(|&i| &encoded[i]).collect();
                    let batch = Batch::collate(&items, tok.pad_id(), adapted.device())?;
                    let (loss, _, g) = causal_lm_loss_and_grads(&adapted, &batch.input_ids, &batch.labels, cfg.low_memory)?;
                    loss_sum += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / micro.len() as f64;
                    tokens += batch.tokens;
                    accumulate(&mut grads, &vars, &g, 1.0 / micro.len() as f64)?;
                }
                let step_no = state.global_step + 1;
                if !loss_sum.is_finite() {
                    return Err(self.diverged(step_no, format!("loss is {loss_sum}"), &adapter, &opt, &state, last_checkpoint));
                }
                let grads: Vec<Tensor> = grads.into_iter().zip(&vars).map(|(g, v)| g.map_or_else(|| v.zeros_like(), Ok)).collect::<candle_core::Result<_>>()?;
                let norm = global_norm(&grads)?;
                if !norm.is_finite() {
                    return Err(self.diverged(step_no, format!("gradient norm is {norm}"), &adapter, &opt, &state, last_checkpoint));
                }
                let grads = if cfg.max_grad_norm > 0.0 && norm > cfg.max_grad_norm {
                    let s = cfg.max_grad_norm / (norm + 1e-6);
                    grads.iter().map(|g| g * s).collect::<candle_core::Result<Vec<_>>>()?
                } else {
                    grads
                };
                opt.step(&grads, lr)?;
                state.global_step = step_no;
                state.batch_in_epoch += micro.len();

                // Log.
                let elapsed = start.elapsed().as_secs_f64();
                let done = (state.global_step - start_step) as f64;
                let eta = elapsed / done * (total_steps - state.global_step) as f64;
                let tps = tokens as f64 / step_start.elapsed().as_secs_f64();
                let epoch = state.global_step as f64 / steps_per_epoch as f64;
                on_event(&TrainEvent::Step { step: step_no, total_steps, epoch, loss: loss_sum, lr, grad_norm: norm, tokens_per_second: tps, elapsed, eta });
                let mut record = LogRecord {
                    current_steps: step_no,
                    total_steps,
                    loss: Some(round4(loss_sum)),
                    eval_loss: None,
                    lr,
                    epoch: round4(epoch),
                    percentage: round4(100.0 * step_no as f64 / total_steps as f64),
                    elapsed_time: format_duration(elapsed),
                    remaining_time: format_duration(eta),
                    grad_norm: Some(round4(norm)),
                    throughput: Some((tps * 10.0).round() / 10.0),
                    peak_rss_mb: peak_rss_bytes().map(mib),
                };
                let at_end = step_no >= total_steps;
                if !eval_encoded.is_empty() && ((cfg.eval_steps > 0 && step_no % cfg.eval_steps == 0) || at_end) {
                    let eval_loss = eval_loss(&adapted, &eval_encoded, cfg.batch_size, tok.pad_id())?;
                    on_event(&TrainEvent::Eval { step: step_no, eval_loss });
                    record.eval_loss = Some(round4(eval_loss));
                }
                log.append(&record)?;
                if cfg.save_steps > 0 && step_no % cfg.save_steps == 0 && !at_end {
                    let ckpt = Checkpoint::save(&self.out_dir, &adapter, &opt, &state)?;
                    on_event(&TrainEvent::Checkpoint { step: step_no, dir: ckpt.dir.clone() });
                    last_checkpoint = Some(ckpt.dir);
                }
                if at_end {
                    on_event(&TrainEvent::EpochEnd { epoch: state.epoch + 1, peak_rss_mib: peak_rss_bytes().map(mib), rss_mib: rss_bytes().map(mib) });
                    break 'epochs;
                }
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
            on_event(&TrainEvent::EpochEnd { epoch: state.epoch, peak_rss_mib: peak_rss_bytes().map(mib), rss_mib: rss_bytes().map(mib) });
        }
        self.finish(train, eval, &report, skipped, &adapter)?;
        self.outcome(TrainStatus::Completed, adapter, &state, skipped, &log_path)
    }

    /// Estimates the memory a micro-batch of `tokens` positions needs, reports it, and
    /// refuses to start when it exceeds what the machine has available.
    fn check_memory(&self, adapter: &AdapterSet, tokens: usize, longest: usize, on_event: &mut impl FnMut(&TrainEvent)) -> Result<()> {
        let cfg = &self.config;
        let elem = self.model.transformer.dtype().size_in_bytes();
        let estimate = MemoryEstimate::new(self.model.config(), tokens, adapter.num_parameters(), elem, cfg.low_memory);
        let available = cfg.memory_budget_mib.map(|m| m << 20).or_else(available_memory_bytes);
        on_event(&TrainEvent::Memory { estimate_mib: mib(estimate.total()), available_mib: available.map(mib), low_memory: cfg.low_memory });
        match available {
            Some(avail) if estimate.total() > avail => Err(Error::InsufficientMemory {
                needed_mib: mib(estimate.total()),
                available_mib: mib(avail),
                batch_size: cfg.batch_size,
                longest,
                cutoff: cfg.cutoff_len,
            }),
            _ => Ok(()),
        }
    }

    /// Saves the last good state (before the failing step) and builds the divergence error.
    fn diverged(&self, step: usize, message: String, adapter: &AdapterSet, opt: &AdamW, state: &TrainerState, last: Option<PathBuf>) -> Error {
        let checkpoint = if state.global_step > 0 { Checkpoint::save(&self.out_dir, adapter, opt, state).ok().map(|c| c.dir).or(last) } else { last };
        Error::TrainingDiverged { step, message, checkpoint }
    }

    /// Writes the adapter, `train_config.json` and `training_loss.svg` into the output dir.
    fn finish(&self, train: &Dataset, eval: Option<&Dataset>, report: &ValidationReport, skipped: usize, adapter: &AdapterSet) -> Result<()> {
        adapter.save(&self.out_dir)?;
        let saved = SavedConfig {
            config: &self.config,
            base_model: self.model.path.display().to_string(),
            train_data: train.path.display().to_string(),
            train_data_sha256: &train.sha256,
            eval_data: eval.map(|e| e.path.display().to_string()),
            eval_data_sha256: eval.map(|e| e.sha256.as_str()),
            examples: report.records - skipped,
            skipped_invalid: skipped,
            tunelab_version: env!("CARGO_PKG_VERSION"),
        };
        fsutil::write_json_atomic(&self.out_dir.join("train_config.json"), &saved)?;
        let history = TrainerLog::read(&self.out_dir.join("trainer_log.jsonl"))?;
        fsutil::write_atomic(&self.out_dir.join("training_loss.svg"), loss_chart(&history).to_svg(640.0, 360.0).as_bytes())
    }

    fn outcome(&self, status: TrainStatus, adapter: AdapterSet, state: &TrainerState, skipped: usize, log_path: &Path) -> Result<TrainOutcome> {
        Ok(TrainOutcome { status, adapter, steps: state.global_step, history: TrainerLog::read(log_path)?, skipped, out_dir: self.out_dir.clone() })
    }
}

/// The loss chart of a training log: training loss per step, held-out loss where measured.
pub fn loss_chart(history: &[LogRecord]) -> LineChart {
    let train: Vec<(f64, f64)> = history.iter().filter_map(|r| r.loss.map(|l| (r.current_steps as f64, l))).collect();
    let eval: Vec<(f64, f64)> = history.iter().filter_map(|r| r.eval_loss.map(|l| (r.current_steps as f64, l))).collect();
    let mut series = vec![Series { name: "train loss".into(), color: "#1f77b4".into(), points: train }];
    if !eval.is_empty() {
        series.push(Series { name: "eval loss".into(), color: "#d62728".into(), points: eval });
    }
    LineChart { title: "training loss".into(), x_label: "step".into(), y_label: "loss".into(), series }
}

/// Mean loss over `data` with the inference kernels (no dropout, no gradients), weighted by
/// labelled tokens.
pub fn eval_loss(model: &Transformer, data: &[Encoded], batch_size: usize, pad_id: u32) -> Result<f64> {
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in data.chunks(batch_size.max(1)) {
        let items: Vec<&Encoded> = chunk.iter().collect();
        let batch = Batch::collate(&items, pad_id, model.device())?;
        let logits = model.forward(&batch.input_ids)?;
        let (loss, n) = masked_cross_entropy(&logits, &batch.labels)?;
        total += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * n as f64;
        count += n;
    }
    Ok(total / count.max(1) as f64)
}

/// Adds `weight ×` each variable's gradient in `grads` to its slot in `acc`.
fn accumulate(acc: &mut [Option<Tensor>], vars: &[Var], grads: &candle_core::backprop::GradStore, weight: f64) -> candle_core::Result<()> {
    for (slot, var) in acc.iter_mut().zip(vars) {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = if weight == 1.0 { g.clone() } else { (g * weight)? };
            let g = &g;
            *slot = Some(match slot.take() {
                Some(prev) => (prev + g)?,
                None => g.clone(),
            });
        }
    }
    Ok(())
}

fn global_norm(grads: &[Tensor]) -> candle_core::Result<f64> {
    let mut sum = 0.0;
    for g in grads {
        sum += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(sum.sqrt())
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}
