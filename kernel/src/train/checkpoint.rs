//! Checkpoints: `checkpoint-{step}/` holding the adapter (PEFT format), the optimiser's
//! moments and the trainer's position, written atomically (into a temporary directory that
//! is installed with `fsutil::install_dir`) so an interrupted save never leaves a broken
//! checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lora::AdapterSet;
use crate::model::Transformer;

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Where training stands: enough to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub global_step: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Batches of the current epoch already consumed.
    pub batch_in_epoch: usize,
    /// SHA-256 of the training data, to refuse resuming on different data.
    pub dataset_sha256: String,
    /// Seed of the run.
    pub seed: u64,
}

/// A saved checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// `…/checkpoint-{step}`.
    pub dir: PathBuf,
}

impl Checkpoint {
    /// Saves adapter, optimiser and state under `out/checkpoint-{step}`.
    pub fn save(out: &Path, adapter: &AdapterSet, opt: &AdamW, state: &TrainerState) -> Result<Self> {
        let dir = out.join(format!("checkpoint-{}", state.global_step));
        // Staging left by a killed save is removed; an old checkpoint set aside is restored.
        fsutil::recover_dir(&dir)?;
        let tmp = fsutil::sibling(&dir, "partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fsutil::create_dir_all(&tmp)?;
        adapter.save(&tmp)?;
        fsutil::save_safetensors_atomic(&tmp.join(OPTIMIZER_FILE), &opt.state_tensors())?;
        let mut st = serde_json::to_value(state).expect("state serialises");
        st["adam_t"] = serde_json::json!(opt.t);
        fsutil::write_json_atomic(&tmp.join(STATE_FILE), &st)?;
        fsutil::install_dir(&tmp, &dir)?;
        Ok(Self { dir })
    }

    /// Loads the state, restores the adapter's variables and the optimiser's moments.
    pub fn restore(&self, model: &Transformer, adapter: &AdapterSet, opt: &mut AdamW) -> Result<TrainerState> {
        let state_path = self.dir.join(STATE_FILE);
        let text = fsutil::read_input_text(&state_path)?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::bad_model(&state_path, e.to_string()))?;
        let state: TrainerState = serde_json::from_value(value.clone()).map_err(|e| Error::bad_model(&state_path, e.to_string()))?;
        let adam_t = value["adam_t"].as_u64().unwrap_or(state.global_step as u64);
        // AdamW's bias correction raises β to this power as an i32.
        let adam_t = i32::try_from(adam_t)
            .map(|t| t as usize)
            .map_err(|_| Error::bad_model(&state_path, format!("adam_t {adam_t} is not an optimizer step count (at most {})", i32::MAX)))?;
        let saved = AdapterSet::load(&self.dir, model)?;
        if saved.config.r != adapter.config.r || saved.layers().keys().ne(adapter.layers().keys()) {
            return Err(Error::bad_model(&self.dir, "the checkpoint's adapter has a different rank or target modules than this run"));
        }
        for (name, layer) in adapter.layers() {
            let s = &saved.layers()[name];
            layer.a.set(s.a.as_tensor())?;
            layer.b.set(s.b.as_tensor())?;
        }
        let opt_path = self.dir.join(OPTIMIZER_FILE);
        let tensors: HashMap<_, _> = candle_core::safetensors::load_buffer(&fsutil::read_input(&opt_path)?, &Device::Cpu)
            .map_err(|e| Error::bad_model(&opt_path, format!("cannot read optimizer state: {e}")))?;
        opt.load_state(&tensors, adam_t).map_err(|m| Error::bad_model(&opt_path, m))?;
        Ok(state)
    }
}

/// The checkpoint with the highest step under `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Option<Checkpoint> {
    checkpoints(out).into_iter().max_by_key(|(s, _)| *s).map(|(_, dir)| Checkpoint { dir })
}

/// Removes every checkpoint under `out` (a fresh run's start: they belong to an earlier run).
pub fn remove_checkpoints(out: &Path) -> Result<()> {
    for (_, dir) in checkpoints(out) {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(())
}

/// `(step, dir)` of each `checkpoint-N` folder under `out` that holds a trainer state.
fn checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(out) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join(STATE_FILE).exists().then_some((step, e.path()))
        })
        .collect()
}
