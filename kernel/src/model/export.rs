//! Writing an HF model directory (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`) — used by `merge` so a merged model loads anywhere.

use std::path::Path;

use serde_json::json;

use super::{ModelConfig, Tokenizer, Weights};
use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::fsutil;

/// Writes `weights` with `cfg`, `tokenizer` and `template` as an HF directory at `dir`.
/// `name_or_path` goes into `config.json` as `_name_or_path`, the name an adapter's
/// `base_model_name_or_path` is checked against: give the source model's path when the
/// weights are that model's own (an adapter trained on the GGUF file then loads on its f32
/// export), and `None` for a model of its own (a merged adapter).
pub fn write_hf_dir(
    dir: &Path,
    cfg: &ModelConfig,
    weights: &Weights,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    name_or_path: Option<&str>,
) -> Result<()> {
    // Weight files of another model left in `dir` (shards, their index) would be loaded
    // instead of, or beside, the ones written here.
    if let Ok(entries) = std::fs::read_dir(dir) {
        let stale: Vec<String> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n != "model.safetensors" && (n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json")))
            .collect();
        if !stale.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds other weight files ({}) that a loader would read instead of the ones written here; write into an empty or new directory",
                dir.display(),
                stale.join(", ")
            )));
        }
    }
    fsutil::create_dir_all(dir)?;
    let arch = match cfg.architecture {
        super::Architecture::Llama => "LlamaForCausalLM",
        super::Architecture::Qwen2 => "Qwen2ForCausalLM",
    };
    let mut config = json!({
        "architectures": [arch],
        "model_type": cfg.architecture.model_type(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
    });
    if let Some(name) = name_or_path {
        config["_name_or_path"] = json!(name);
    }
    fsutil::write_json_atomic(&dir.join("config.json"), &config)?;
    let mut tensors = weights.tensors().clone();
    if cfg.tie_word_embeddings {
        tensors.remove("lm_head.weight");
    }
    fsutil::save_safetensors_atomic(&dir.join("model.safetensors"), &tensors)?;
    let tok_json = tokenizer.inner().to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))?;
    fsutil::write_atomic(&dir.join("tokenizer.json"), tok_json.as_bytes())?;
    let tcfg = json!({
        "bos_token": tokenizer.bos_token(),
        "eos_token": tokenizer.eos_token(),
        "pad_token": tokenizer.id_to_token(tokenizer.pad_id()),
        "add_bos_token": tokenizer.adds_bos(),
        "chat_template": template.source(),
    });
    fsutil::write_json_atomic(&dir.join("tokenizer_config.json"), &tcfg)
}
