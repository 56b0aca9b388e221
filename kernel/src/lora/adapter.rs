//! A set of LoRA layers over a model's projections, saved and loaded in PEFT's format
//! (`adapter_model.safetensors` + `adapter_config.json`), checked against the base model
//! on load, and mergeable into the base weights.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::layer::init_rng;
use super::peft_compat;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::{Linear, LoraLayer, Transformer, Weights, PROJECTION_NAMES};

/// The projections `all` targets: every linear layer but `lm_head` (the model's
/// [`PROJECTION_NAMES`]).
pub const ALL_TARGETS: [&str; PROJECTION_NAMES.len()] = PROJECTION_NAMES;

/// The largest update scale (`lora_alpha / r`, or `/ √r` with rsLoRA) an adapter may have:
/// common settings give 0.5 to 4; rsLoRA at rank 8 and alpha 128 gives 45.
pub const MAX_LORA_SCALE: f64 = 256.0;

/// File names PEFT uses.
const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's key prefix for a causal LM: `base_model.model.` + the HF module name.
const PEFT_PREFIX: &str = "base_model.model.";

/// LoRA hyper-parameters, serialised as PEFT's `adapter_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM`.
    pub task_type: String,
    /// Rank of the update.
    pub r: usize,
    /// Scaling numerator (`scale = lora_alpha / r`).
    pub lora_alpha: f64,
    /// Dropout on the LoRA input during training.
    pub lora_dropout: f32,
    /// Short names of the adapted projections (`q_proj`, …).
    pub target_modules: Vec<String>,
    /// Bias handling; tunelab trains no biases (`none`).
    pub bias: String,
    /// `scale = lora_alpha / √r` instead of `/ r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// PEFT writes `true` for saved adapters.
    #[serde(default = "yes")]
    pub inference_mode: bool,
    /// Weights are stored `[out, in]` (PEFT's `fan_in_fan_out = false`).
    #[serde(default)]
    pub fan_in_fan_out: bool,
}

fn yes() -> bool {
    true
}

impl Default for LoraConfig {
    /// The method's defaults: rank 8, alpha 16, dropout 0, all linear projections.
    fn default() -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: ALL_TARGETS.iter().map(|s| s.to_string()).collect(),
            bias: "none".into(),
            use_rslora: false,
            base_model_name_or_path: None,
            inference_mode: true,
            fan_in_fan_out: false,
        }
    }
}

impl LoraConfig {
    /// The multiplier of the low-rank update.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Checks that these settings give a usable update: rank at least 1, alpha finite and
    /// positive, a scale no larger than [`MAX_LORA_SCALE`], dropout in `[0, 1)`. The message
    /// names the field; callers add the file.
    pub fn check_usable(&self) -> std::result::Result<(), String> {
        if self.r == 0 {
            return Err("r is 0; the rank must be at least 1 (the update's scale alpha / r would be infinite)".into());
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return Err(format!("lora_alpha is {}; it must be a finite number above 0", self.lora_alpha));
        }
        let scale = self.scale();
        if scale > MAX_LORA_SCALE {
            return Err(format!(
                "lora_alpha {} with r {} gives a scale of {scale} (more than {MAX_LORA_SCALE}): such an update swamps the base weights; check lora_alpha",
                self.lora_alpha, self.r
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(format!("lora_dropout is {}; it must be in [0, 1)", self.lora_dropout));
        }
        Ok(())
    }

    /// Expands `all` and validates target names.
    pub fn with_targets(mut self, targets: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        for t in targets {
            if t == "all" {
                out.extend(ALL_TARGETS.iter().map(|s| s.to_string()));
            } else if ALL_TARGETS.contains(&t.as_str()) {
                out.push(t.clone());
            } else {
                return Err(Error::InvalidArgument(format!("unknown LoRA target {t:?} (known: all, {}; lm_head is never adapted)", ALL_TARGETS.join(", "))));
            }
        }
        out.sort_by_key(|t| ALL_TARGETS.iter().position(|a| a == t));
        out.dedup();
        self.target_modules = out;
        Ok(self)
    }

    fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| module.ends_with(&format!(".{t}")))
    }
}

/// LoRA layers keyed by HF module name (`model.layers.0.self_attn.q_proj`).
#[derive(Debug, Clone)]
pub struct AdapterSet {
    /// Hyper-parameters.
    pub config: LoraConfig,
    layers: BTreeMap<String, LoraLayer>,
}

impl AdapterSet {
    /// Fresh layers for every targeted projection of `model`, initialised from `seed`.
    pub fn new(model: &Transformer, config: LoraConfig, seed: u64) -> Result<Self> {
        config.check_usable().map_err(|m| Error::InvalidArgument(format!("LoRA settings: {m}")))?;
        // B·A has rank at most min(in, out): a larger r only costs memory (checked before
        // anything is allocated).
        let targeted: Vec<(String, (usize, usize))> = model.projections().into_iter().filter(|(n, _)| config.targets(n)).map(|(n, p)| (n, p.dims())).collect();
        if let Some((name, (inp, out))) = targeted.iter().find(|(_, (i, o))| config.r > (*i).min(*o)) {
            let (inp, out) = (*inp, *out);
            return Err(Error::InvalidArgument(format!(
                "LoRA rank {} is larger than {name} ({inp} → {out}) allows: an update's rank is at most {}",
                config.r,
                inp.min(out)
            )));
        }
        let mut rng = init_rng(seed);
        let mut layers = BTreeMap::new();
        let dtype = model.dtype();
        for (name, proj) in model.projections() {
            if config.targets(&name) {
                let (inp, out) = proj.dims();
                layers.insert(name, LoraLayer::new(inp, out, config.r, config.scale(), config.lora_dropout, dtype, model.device(), &mut rng)?);
            }
        }
        if layers.is_empty() {
            return Err(Error::InvalidArgument(format!("no projection matches target_modules {:?}", config.target_modules)));
        }
        Ok(Self { config, layers })
    }

    /// An adapter from existing layers keyed by HF module name.
    pub fn from_layers(config: LoraConfig, layers: BTreeMap<String, LoraLayer>) -> Self {
        Self { config, layers }
    }

    /// The layers by module name.
    pub fn layers(&self) -> &BTreeMap<String, LoraLayer> {
        &self.layers
    }

    /// Every trainable variable (A and B of each layer), in a stable order.
    pub fn vars(&self) -> Vec<Var> {
        self.layers.values().flat_map(|l| [l.a.clone(), l.b.clone()]).collect()
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.layers.values().map(|l| l.a.elem_count() + l.b.elem_count()).sum()
    }

    /// Whether every weight is a finite number (after a diverged step it may not be).
    pub fn is_finite(&self) -> Result<bool> {
        for l in self.layers.values() {
            for t in [l.a.as_tensor(), l.b.as_tensor()] {
                if first_non_finite(t)?.is_some() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Tensors under PEFT's key names.
    pub fn peft_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, l) in &self.layers {
            out.insert(format!("{PEFT_PREFIX}{name}.lora_A.weight"), l.a.as_tensor().clone());
            out.insert(format!("{PEFT_PREFIX}{name}.lora_B.weight"), l.b.as_tensor().clone());
        }
        out
    }

    /// A copy of `model` with these layers attached (the base weights are shared, not copied;
    /// the adapter's variables are shared too, so training updates show through).
    pub fn apply(&self, model: &Transformer) -> Transformer {
        let mut adapted = model.clone();
        for (name, proj) in adapted.projections_mut() {
            proj.set_lora(self.layers.get(&name).cloned());
        }
        adapted
    }

    /// A copy of `model` with every LoRA update folded into its weights (`W + scale·B·A`):
    /// the adapted model at the base model's inference cost (for evaluation, not training).
    pub fn merged(&self, model: &Transformer) -> Result<Transformer> {
        self.for_inference(&model.without_packed_weights())
    }

    /// `model` adapted for inference at the least cost per token: a projection whose
    /// decoding steps read the model file's packed blocks keeps its LoRA update attached
    /// (the low-rank term is added after the packed product, a few thousand multiply-adds
    /// per token, and the blocks stay exact); any other projection gets the update folded
    /// into its f32 weight, as [`Self::merged`] does.
    pub fn for_inference(&self, model: &Transformer) -> Result<Transformer> {
        let mut adapted = model.clone();
        for (name, proj) in adapted.projections_mut() {
            let Some(layer) = self.layers.get(&name) else { continue };
            if proj.is_packed() {
                proj.set_lora(Some(layer.clone()));
            } else {
                *proj = Linear::new(layer.folded_into(proj.weight())?, proj.bias().cloned());
            }
        }
        Ok(adapted)
    }

    /// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        fsutil::create_dir_all(dir)?;
        let tensors: HashMap<String, Tensor> =
            self.peft_tensors().into_iter().map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?))).collect::<candle_core::Result<_>>()?;
        fsutil::save_safetensors_atomic(&dir.join(WEIGHTS_FILE), &tensors)?;
        fsutil::write_json_atomic(&dir.join(CONFIG_FILE), &self.config)
    }

    /// [`AdapterSet::load`] for `model`, also checking that the adapter's
    /// `base_model_name_or_path` names it (by its path or metadata name, normalized: see
    /// `base_model.rs`); an adapter that declares another base is refused naming both.
    pub fn load_for(dir: &Path, model: &crate::Model) -> Result<Self> {
        let set = Self::load(dir, &model.transformer)?;
        if let Some(declared) = &set.config.base_model_name_or_path {
            super::base_model::check(declared, &model.names).map_err(|m| Error::bad_model(dir.join(CONFIG_FILE), m))?;
        }
        Ok(set)
    }

    /// Loads a PEFT LoRA adapter from `dir` and checks that it fits `model`: every key
    /// names an existing projection, ranks agree with the config, and shapes match.
    pub fn load(dir: &Path, model: &Transformer) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = fsutil::read_input_text(&cfg_path)?;
        let mut raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::bad_model(&cfg_path, format!("invalid adapter config at line {}: {e}", e.line())))?;
        peft_compat::normalize(&mut raw).map_err(|m| Error::bad_model(&cfg_path, m))?;
        let config: LoraConfig = serde_json::from_value(raw).map_err(|e| Error::bad_model(&cfg_path, format!("invalid adapter config: {e}")))?;
        if config.peft_type != "LORA" {
            return Err(Error::bad_model(&cfg_path, format!("peft_type is {:?}; only LORA adapters are supported", config.peft_type)));
        }
        config.check_usable().map_err(|m| Error::bad_model(&cfg_path, m))?;
        let w_path = dir.join(WEIGHTS_FILE);
        if !w_path.exists() {
            return Err(Error::bad_model(dir, format!("missing {WEIGHTS_FILE}")));
        }
        let tensors = candle_core::safetensors::load_buffer(&fsutil::read_input(&w_path)?, &Device::Cpu)
            .map_err(|e| Error::bad_model(&w_path, format!("cannot read adapter weights (truncated or corrupt?): {e}")))?;
        let projections: HashMap<String, (usize, usize)> = model.projections().into_iter().map(|(n, p)| (n, p.dims())).collect();
        let mut a_b: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        let mut problems = Vec::new();
        for (key, t) in tensors {
            let Some(rest) = key.strip_prefix(PEFT_PREFIX) else {
                problems.push(format!("{key}: not a PEFT LoRA key (expected {PEFT_PREFIX}<module>.lora_A.weight)"));
                continue;
            };
            if rest.contains("lora_embedding_") || rest.contains("lora_magnitude_vector") {
                problems.push(format!("{key}: embedding-layer LoRA and DoRA weights are not supported"));
                continue;
            }
            let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                problems.push(format!("{key}: not a lora_A/lora_B weight"));
                continue;
            };
            let Some(&(inp, out)) = projections.get(module) else {
                problems.push(format!("{key}: the base model has no projection {module} ({} layers)", model.config().num_hidden_layers));
                continue;
            };
            let want = if which == 0 { [config.r, inp] } else { [out, config.r] };
            if t.dims() != want {
                problems.push(format!("{key}: shape {:?}, but the base model needs {want:?} (r = {}, in = {inp}, out = {out})", t.dims(), config.r));
                continue;
            }
            if let Some(bad) = first_non_finite(&t)? {
                problems.push(format!("{key}: holds {bad} (an adapter trained into NaN or infinity changes every output)"));
                continue;
            }
            let entry = a_b.entry(module.to_string()).or_default();
            let t = t.to_dtype(model.dtype())?.to_device(model.device())?;
            if which == 0 {
                entry.0 = Some(t);
            } else {
                entry.1 = Some(t);
            }
        }
        let mut layers = BTreeMap::new();
        for (module, pair) in a_b {
            match pair {
                (Some(a), Some(b)) => {
                    layers.insert(module, LoraLayer::from_tensors(&a, &b, config.scale(), config.lora_dropout)?);
                }
                (a, _) => problems.push(format!("{module}: lora_{} is missing", if a.is_none() { "A" } else { "B" })),
            }
        }
        if !problems.is_empty() {
            return Err(Error::bad_model(&w_path, format!("adapter does not fit the base model:\n  {}", problems.join("\n  "))));
        }
        if let Some(mismatch) = targets_mismatch(&config, layers.keys(), projections.keys()) {
            return Err(Error::bad_model(&cfg_path, mismatch));
        }
        if layers.is_empty() {
            return Err(Error::bad_model(&w_path, "adapter holds no LoRA weights"));
        }
        Ok(Self { config, layers })
    }

    /// The base weights with every LoRA update merged in (`W + scale·B·A`), under HF names.
    /// Each projection's weight is replaced in place, so when nothing else holds the base
    /// tensors the merge needs memory for one projection more, not for a second model.
    pub fn merge_into(&self, base: Weights) -> Result<Weights> {
        let source = base.source().to_path_buf();
        let mut tensors = base.into_tensors();
        for (module, layer) in &self.layers {
            let key = format!("{module}.weight");
            let w = tensors.remove(&key).ok_or_else(|| Error::bad_model(&source, format!("missing tensor {key} to merge into")))?;
            let merged = layer.folded_into(&w)?;
            drop(w);
            tensors.insert(key, merged);
        }
        Ok(Weights::new(source, tensors))
    }
}

/// Where the config's `target_modules` and the weights disagree, in words: PEFT applies only
/// the targeted modules' weights (the rest would be silently ignored there and applied
/// here), and refuses a target the model does not have. Checked when the targets are plain
/// module names; a regular expression (or no list) leaves the weights to decide.
fn targets_mismatch<'a>(config: &LoraConfig, loaded: impl Iterator<Item = &'a String>, projections: impl Iterator<Item = &'a String>) -> Option<String> {
    let plain = |t: &String| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if config.target_modules.is_empty() || !config.target_modules.iter().all(plain) {
        return None;
    }
    let projections: Vec<&String> = projections.collect();
    if let Some(t) = config.target_modules.iter().find(|t| !projections.iter().any(|p| p.ends_with(&format!(".{t}")))) {
        return Some(format!("target_modules names {t:?}, which no projection of the base model matches"));
    }
    let untargeted: Vec<&String> = loaded.filter(|m| !config.targets(m)).collect();
    (!untargeted.is_empty()).then(|| {
        format!(
            "adapter_model.safetensors holds weights for {} module(s) that target_modules {:?} does not list (the first: {}); PEFT would ignore them",
            untargeted.len(),
            config.target_modules,
            untargeted[0]
        )
    })
}

/// The first NaN or infinite value of `t`, described with its flat index, if any.
fn first_non_finite(t: &Tensor) -> Result<Option<String>> {
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(values.iter().position(|v| !v.is_finite()).map(|i| format!("{} at element {i}", values[i])))
}
