//! The training run as named steps: [`prepare`] the data → [`Plan`] the steps → start or
//! resume the [`TrainerState`] → for each optimiser step, [`step`] (micro-batches, loss and
//! gradients, NaN check, clipping, AdamW) → log, evaluate, checkpoint → write the adapter.
//! Cancellation is honoured between steps, after saving a checkpoint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cancel::interrupt_flag;
use super::checkpoint::{latest_checkpoint, remove_checkpoints, Checkpoint, TrainerState};
use super::config::TrainConfig;
use super::events::{TrainEvent, TrainOutcome, TrainStatus};
use super::log::{loss_chart, LogRecord, TrainerLog};
use super::loss::eval_loss;
use super::memory::{mib, peak_rss_bytes, rss_bytes, MemoryEstimate};
use super::optim::AdamW;
use super::prepare::{prepare, Prepared};
use super::schedule::Plan;
use super::step::{step, StepOptions, StepOutcome};
use crate::data::{Batch, BatchPlan, Dataset, Encoded};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lora::AdapterSet;
use crate::model::{Model, Transformer};

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
    /// Where it trained: `cpu` or `cuda:N`.
    device: String,
    /// How the frozen base weights were stored: `f32` or `bf16`.
    base_dtype: String,
    tunelab_version: &'static str,
}

impl<'a> Trainer<'a> {
    /// A trainer writing into `out_dir`. It stops gracefully when the process-wide
    /// [`interrupt_flag`] is set (a notebook interrupt), unless given its own flag with
    /// [`Trainer::with_cancel_flag`].
    pub fn new(model: &'a Model, config: TrainConfig, out_dir: impl Into<PathBuf>) -> Self {
        Self { model, config, out_dir: out_dir.into(), cancel: interrupt_flag(), resume: false }
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
        // The loop takes the callback as a trait object, so it is compiled once, optimized,
        // with the library: a generic loop would be compiled into each caller, such as a
        // notebook cell built without optimization.
        self.run_with(train, eval, &mut on_event)
    }

    /// [`Trainer::run`] with the callback as a trait object.
    fn run_with(&self, train: &Dataset, eval: Option<&Dataset>, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<TrainOutcome> {
        let cfg = &self.config;
        cfg.validate().map_err(Error::InvalidArgument)?;
        // An interrupt that arrived before this run (e.g. stopping an earlier cell) is spent.
        self.cancel.store(false, Ordering::SeqCst);
        fsutil::create_dir_all(&self.out_dir)?;
        let data = prepare(cfg, self.model, train, eval)?;
        let plan = Plan::new(cfg, data.train.len());
        let mut run = self.start(train, &data, plan, on_event)?;

        'epochs: while run.state.global_step < plan.total_steps {
            let batches = BatchPlan::new(&data.lengths, cfg.batch_size, cfg.seed, run.state.epoch);
            let first_step = run.state.batch_in_epoch / cfg.grad_accum;
            for micro in batches.batches.chunks(cfg.grad_accum).skip(first_step) {
                // Cancellation is honoured between steps, after saving where we are.
                if self.cancel.load(Ordering::SeqCst) {
                    return self.interrupted(run, train, eval, &data, on_event);
                }
                let event = self.train_step(&mut run, &data.train, micro)?;
                on_event(&event);
                let at_end = self.after_step(&mut run, &event, &data.eval, on_event)?;
                if at_end {
                    on_event(&TrainEvent::EpochEnd { epoch: run.state.epoch + 1, peak_rss_mib: peak_rss_bytes().map(mib), rss_mib: rss_bytes().map(mib) });
                    break 'epochs;
                }
            }
            run.state.epoch += 1;
            run.state.batch_in_epoch = 0;
            on_event(&TrainEvent::EpochEnd { epoch: run.state.epoch, peak_rss_mib: peak_rss_bytes().map(mib), rss_mib: rss_bytes().map(mib) });
        }
        self.finish(train, eval, &data, &run.adapter)?;
        self.outcome(TrainStatus::Completed, run, data.skipped)
    }

    /// Builds the adapter and optimiser, checks memory (before anything is written: a run
    /// that cannot fit is refused with nothing changed), starts fresh or resumes, opens the
    /// log and reports [`TrainEvent::Started`].
    fn start(&self, train: &Dataset, data: &Prepared, plan: Plan, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<Run> {
        let cfg = &self.config;
        let mut lora = cfg.lora.clone();
        lora.base_model_name_or_path = Some(self.model.path.display().to_string());
        let adapter = AdapterSet::new(&self.model.transformer, lora, cfg.seed)?;
        // Tensor ids must come from one copy of candle for backprop (see with_fresh_ids).
        let adapted = adapter.apply(&self.model.transformer.with_fresh_ids()?);
        let mut opt = AdamW::new(adapter.vars(), cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay)?;
        let longest = data.longest();
        self.check_memory(&adapter, cfg.batch_size.min(data.train.len()) * longest, longest, on_event)?;
        let (state, resumed_from) = self.initial_state(train, &plan, &adapter, &mut opt)?;
        let log = TrainerLog::open(&self.log_path())?;
        on_event(&TrainEvent::Started {
            total_steps: plan.total_steps,
            start_step: state.global_step,
            examples: data.train.len(),
            skipped: data.skipped,
            shortened: data.train.iter().filter(|e| e.truncated).count(),
            trainable_params: adapter.num_parameters(),
        });
        let start_step = state.global_step;
        Ok(Run { adapter, adapted, opt, state, plan, log, last_checkpoint: resumed_from.map(|c| c.dir), start: Instant::now(), start_step })
    }

    /// A fresh state (and an empty log), or with `resume` the latest checkpoint's state,
    /// adapter and optimiser moments (and the log cut back to it). Refuses to resume on
    /// changed data.
    fn initial_state(&self, train: &Dataset, plan: &Plan, adapter: &AdapterSet, opt: &mut AdamW) -> Result<(TrainerState, Option<Checkpoint>)> {
        let cfg = &self.config;
        let log_path = self.log_path();
        let fresh =
            TrainerState { global_step: 0, total_steps: plan.total_steps, epoch: 0, batch_in_epoch: 0, dataset_sha256: train.sha256.clone(), seed: cfg.seed };
        let Some(ckpt) = self.resume.then(|| latest_checkpoint(&self.out_dir)).flatten() else {
            // A fresh run replaces an earlier run in this folder: its checkpoints go, so a
            // later --resume never continues the other run's weights.
            remove_checkpoints(&self.out_dir)?;
            fsutil::write_atomic(&log_path, b"")?;
            return Ok((fresh, None));
        };
        let saved = ckpt.restore(&self.model.transformer, adapter, opt)?;
        if saved.global_step > plan.total_steps {
            return Err(Error::InvalidArgument(format!(
                "{}: the checkpoint is at step {}, past this run's {} planned steps (another run's, or other settings); start without --resume or in a new output directory",
                ckpt.dir.display(),
                saved.global_step,
                plan.total_steps
            )));
        }
        if saved.dataset_sha256 != train.sha256 {
            return Err(Error::InvalidArgument(format!(
                "{}: the training data changed since the checkpoint {} was written; resume with the same data or start a new output directory",
                train.path.display(),
                ckpt.dir.display()
            )));
        }
        let state = TrainerState { total_steps: plan.total_steps, ..saved };
        TrainerLog::truncate_after(&log_path, state.global_step)?;
        Ok((state, Some(ckpt)))
    }

    /// One optimiser step over the micro-batches `micro` (indices into `examples`): the
    /// [`step`] itself, then the state moves on. Returns the step's [`TrainEvent::Step`].
    fn train_step(&self, run: &mut Run, examples: &[Encoded], micro: &[Vec<usize>]) -> Result<TrainEvent> {
        let cfg = &self.config;
        let step_start = Instant::now();
        let lr = run.plan.lr_at(run.state.global_step, cfg.learning_rate);
        let pad = self.model.tokenizer.pad_id();
        let batches = micro
            .iter()
            .map(|idx| Batch::collate(&idx.iter().map(|&i| &examples[i]).collect::<Vec<_>>(), pad, run.adapted.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let opts = StepOptions { lr, max_grad_norm: cfg.max_grad_norm, low_memory: cfg.low_memory };
        let done = match step(&run.adapted, &mut run.opt, &batches, opts) {
            Err(Error::TrainingDiverged { message, .. }) => return Err(self.diverged(run, run.state.global_step + 1, message)),
            other => other?,
        };
        run.state.global_step += 1;
        run.state.batch_in_epoch += micro.len();
        Ok(run.step_event(lr, &done, step_start.elapsed()))
    }

    /// After a step: its log line (with the held-out loss when one is due), and a
    /// checkpoint when one is due. Returns whether this was the last planned step.
    fn after_step(&self, run: &mut Run, event: &TrainEvent, eval: &[Encoded], on_event: &mut dyn FnMut(&TrainEvent)) -> Result<bool> {
        let cfg = &self.config;
        let step_no = run.state.global_step;
        let at_end = step_no >= run.plan.total_steps;
        let mut record = LogRecord::from_step(event, peak_rss_bytes().map(mib)).expect("train_step returns a step event");
        if !eval.is_empty() && ((cfg.eval_steps > 0 && step_no.is_multiple_of(cfg.eval_steps)) || at_end) {
            let eval_loss = eval_loss(&run.adapted, eval, cfg.batch_size, self.model.tokenizer.pad_id())?;
            on_event(&TrainEvent::Eval { step: step_no, eval_loss });
            record.eval_loss = Some(super::log::round4(eval_loss));
        }
        run.log.append(&record)?;
        if cfg.save_steps > 0 && step_no.is_multiple_of(cfg.save_steps) && !at_end {
            // An update can overflow the weights while this step's loss was still finite: a
            // checkpoint of them would be no good state to resume from.
            if !run.adapter.is_finite()? {
                let message = "the adapter's weights overflowed to NaN or infinity (learning rate too high?)".to_string();
                return Err(self.diverged(run, step_no, message));
            }
            let ckpt = Checkpoint::save(&self.out_dir, &run.adapter, &run.opt, &run.state)?;
            on_event(&TrainEvent::Checkpoint { step: step_no, dir: ckpt.dir.clone() });
            run.last_checkpoint = Some(ckpt.dir);
        }
        Ok(at_end)
    }

    /// Saves a checkpoint and the adapter so far, and returns [`TrainStatus::Interrupted`].
    fn interrupted(&self, run: Run, train: &Dataset, eval: Option<&Dataset>, data: &Prepared, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<TrainOutcome> {
        let ckpt = Checkpoint::save(&self.out_dir, &run.adapter, &run.opt, &run.state)?;
        on_event(&TrainEvent::Checkpoint { step: run.state.global_step, dir: ckpt.dir.clone() });
        self.finish(train, eval, data, &run.adapter)?;
        self.outcome(TrainStatus::Interrupted { checkpoint: ckpt.dir }, run, data.skipped)
    }

    fn log_path(&self) -> PathBuf {
        self.out_dir.join("trainer_log.jsonl")
    }

    /// Estimates the memory a micro-batch of `tokens` positions needs, reports it, and
    /// refuses to start when it exceeds what the machine has available.
    fn check_memory(&self, adapter: &AdapterSet, tokens: usize, longest: usize, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<()> {
        let cfg = &self.config;
        let elem = self.model.transformer.dtype().size_in_bytes();
        let transformer = &self.model.transformer;
        // The fused CPU ops apply where the embedding table does (the CPU, f32/f64 weights).
        let estimate = if transformer.uses_cpu_kernels() {
            MemoryEstimate::new(self.model.config(), tokens, adapter.num_parameters(), elem, cfg.low_memory)
        } else {
            MemoryEstimate::composed(self.model.config(), tokens, longest.min(cfg.cutoff_len), adapter.num_parameters(), elem, cfg.low_memory)
        };
        let available = cfg.memory_budget_mib.map(|m| m << 20).or_else(|| crate::device::available_bytes(transformer.device()));
        on_event(&TrainEvent::Memory { estimate_mib: mib(estimate.total()), available_mib: available.map(mib), low_memory: cfg.low_memory });
        match available {
            Some(avail) if estimate.total() > avail => Err(Error::InsufficientMemory {
                needed_mib: mib(estimate.total()),
                available_mib: mib(avail),
                device: crate::device::device_name(transformer.device()),
                batch_size: cfg.batch_size,
                longest,
                cutoff: cfg.cutoff_len,
            }),
            _ => Ok(()),
        }
    }

    /// Saves the last good state (before the failing step) and builds the divergence error
    /// for optimiser step `step` (1-based), the one that failed.
    fn diverged(&self, run: &Run, step: usize, message: String) -> Error {
        let state = &run.state;
        let last = run.last_checkpoint.clone();
        // Only weights that are still numbers are a "last good state"; otherwise the last
        // checkpoint written (if any) is.
        let good = state.global_step > 0 && run.adapter.is_finite().unwrap_or(false);
        let checkpoint = if good { Checkpoint::save(&self.out_dir, &run.adapter, &run.opt, state).ok().map(|c| c.dir).or(last) } else { last };
        Error::TrainingDiverged { step, message, checkpoint }
    }

    /// Writes the adapter, `train_config.json` and `training_loss.svg` into the output dir.
    fn finish(&self, train: &Dataset, eval: Option<&Dataset>, data: &Prepared, adapter: &AdapterSet) -> Result<()> {
        adapter.save(&self.out_dir)?;
        let saved = SavedConfig {
            config: &self.config,
            base_model: self.model.path.display().to_string(),
            train_data: train.path.display().to_string(),
            train_data_sha256: &train.sha256,
            eval_data: eval.map(|e| e.path.display().to_string()),
            eval_data_sha256: eval.map(|e| e.sha256.as_str()),
            examples: data.report.records - data.skipped,
            skipped_invalid: data.skipped,
            device: crate::device::device_name(self.model.transformer.device()),
            base_dtype: self.model.transformer.base_weight_dtype().as_str().to_string(),
            tunelab_version: env!("CARGO_PKG_VERSION"),
        };
        fsutil::write_json_atomic(&self.out_dir.join("train_config.json"), &saved)?;
        let history = TrainerLog::read(&self.log_path())?;
        fsutil::write_atomic(&self.out_dir.join("training_loss.svg"), loss_chart(&history).to_svg(640.0, 360.0).as_bytes())
    }

    /// The outcome of `run`, with every log record so far.
    fn outcome(&self, status: TrainStatus, run: Run, skipped: usize) -> Result<TrainOutcome> {
        let history = TrainerLog::read(&self.log_path())?;
        Ok(TrainOutcome { status, adapter: run.adapter, steps: run.state.global_step, history, skipped, out_dir: self.out_dir.clone() })
    }
}

/// A run in progress: the adapter being trained, its optimiser, where training stands.
struct Run {
    adapter: AdapterSet,
    /// The base model with `adapter` attached (sharing its variables).
    adapted: Transformer,
    opt: AdamW,
    state: TrainerState,
    plan: Plan,
    log: TrainerLog,
    /// The latest checkpoint written or resumed from.
    last_checkpoint: Option<PathBuf>,
    /// When this (re)start began, and at which step.
    start: Instant,
    start_step: usize,
}

impl Run {
    /// The [`TrainEvent::Step`] of the step just taken at `lr`, which took `took` for `done.tokens`.
    fn step_event(&self, lr: f64, done: &StepOutcome, took: Duration) -> TrainEvent {
        let (step, total_steps) = (self.state.global_step, self.plan.total_steps);
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = elapsed / (step - self.start_step) as f64 * (total_steps - step) as f64;
        TrainEvent::Step {
            step,
            total_steps,
            epoch: step as f64 / self.plan.steps_per_epoch as f64,
            loss: done.loss,
            lr,
            grad_norm: done.grad_norm,
            tokens_per_second: done.tokens as f64 / took.as_secs_f64(),
            elapsed,
            eta,
        }
    }
}
