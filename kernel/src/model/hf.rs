//! Loading an HF model directory: `config.json`, one or many `*.safetensors`,
//! `tokenizer.json` and `tokenizer_config.json` (chat template, special tokens).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use serde_json::Value as Json;

use super::config::{Architecture, HfConfig, ModelConfig};
use super::tokenizer::{read_json_opt, Tokenizer};
use super::transformer::Transformer;
use super::weights::Weights;
use super::Model;
use crate::error::{Error, Result};

/// Reads the configuration and weights in `dir`.
pub(crate) fn load_weights(dir: &Path, device: &Device) -> Result<(ModelConfig, Weights)> {
    Ok((read_config(dir)?, read_safetensors(dir, device)?))
}

/// Loads the model in `dir`, with the weights it was built from.
pub(crate) fn load_dir(dir: &Path, device: &Device) -> Result<(Model, Weights)> {
    let cfg = read_config(dir)?;
    let weights = read_safetensors(dir, device)?;
    let transformer = Transformer::load(&cfg, &weights)?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let template_source = chat_template_source(dir)?;
    let template = super::template_for(template_source.as_deref(), &tokenizer, dir)?;
    let declared = read_json_opt(&dir.join("config.json"))?.and_then(|c| c.get("_name_or_path").and_then(Json::as_str).map(str::to_string));
    let names = std::iter::once(dir.display().to_string()).chain(declared).collect();
    Ok((Model { path: dir.to_path_buf(), transformer, tokenizer, template, names }, weights))
}

fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let json = read_json_opt(&path)?.ok_or_else(|| Error::bad_model(dir, "missing config.json"))?;
    let hf: HfConfig = serde_json::from_value(json).map_err(|e| Error::bad_model(&path, e.to_string()))?;
    let arch_name = hf.architectures.first().cloned().or(hf.model_type.clone()).unwrap_or_else(|| "unknown".to_string());
    let architecture = Architecture::parse(&arch_name).ok_or_else(|| Error::UnsupportedArchitecture { path: path.clone(), arch: arch_name })?;
    if let Some(scaling) =
        hf.rope_scaling.as_ref().filter(|v| !v.is_null() && v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()) != Some("default"))
    {
        return Err(Error::bad_model(
            &path,
            format!("rope_scaling {scaling} is not supported: tunelab applies plain RoPE, so this model's positions would be wrong (Llama 3.1-style, YaRN and linear scaling are not implemented)"),
        ));
    }
    let cfg = ModelConfig {
        architecture,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        vocab_size: hf.vocab_size,
        rope_theta: hf.rope_theta,
        rms_norm_eps: hf.rms_norm_eps,
        max_position_embeddings: hf.max_position_embeddings,
        tie_word_embeddings: hf.tie_word_embeddings,
    };
    cfg.validate().map_err(|m| Error::bad_model(&path, m))?;
    Ok(cfg)
}

/// The index of a sharded checkpoint, which names the shard holding each tensor.
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// Reads the checkpoint's tensors in `dir`, converting to f32: the shards that
/// `model.safetensors.index.json` names when there is one (each tensor it maps must be in
/// its shard; other `*.safetensors` files, such as an adapter saved beside the model, are
/// not weights), else every `*.safetensors` file. A missing, truncated or corrupt shard is
/// reported by file name, and a tensor stored twice is an error.
fn read_safetensors(dir: &Path, device: &Device) -> Result<Weights> {
    let index_path = dir.join(SHARD_INDEX);
    let index: Option<HashMap<String, String>> = match read_json_opt(&index_path)? {
        Some(json) => Some(
            json.get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| Error::bad_model(&index_path, "no weight_map object"))?
                .iter()
                .map(|(name, file)| {
                    file.as_str()
                        .map(|f| (name.clone(), f.to_string()))
                        .ok_or_else(|| Error::bad_model(&index_path, format!("weight_map entry {name:?} is not a file name")))
                })
                .collect::<Result<_>>()?,
        ),
        None => None,
    };
    let mut files: Vec<std::path::PathBuf> = match &index {
        Some(map) => {
            let mut names: Vec<&String> = map.values().collect();
            names.sort();
            names.dedup();
            let mut files = Vec::new();
            for name in names {
                // A shard is a file name in this directory, never a path elsewhere.
                if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
                    return Err(Error::bad_model(&index_path, format!("shard name {name:?} is not a file name in the model directory")));
                }
                let file = dir.join(name);
                if !file.is_file() {
                    let tensor = map.iter().find(|(_, f)| *f == name).map(|(t, _)| t.as_str()).unwrap_or("");
                    return Err(Error::bad_model(&index_path, format!("shard {name} (holding {tensor} and others) is missing")));
                }
                files.push(file);
            }
            files
        }
        None => std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect(),
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_model(dir, "no *.safetensors files"));
    }
    let mut tensors = HashMap::new();
    let mut found_in: HashMap<String, std::path::PathBuf> = HashMap::new();
    for file in files {
        let loaded = candle_core::safetensors::load(&file, device)
            .map_err(|e| Error::bad_model(&file, format!("cannot read safetensors (truncated or corrupt?): {e}")))?;
        for (name, t) in loaded {
            if let Some(first) = found_in.insert(name.clone(), file.clone()) {
                return Err(Error::bad_model(&file, format!("tensor {name} is also in {}", first.display())));
            }
            tensors.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    if let Some(map) = &index {
        let mut wrong: Vec<String> = map
            .iter()
            .filter(|(name, file)| found_in.get(*name).and_then(|p| p.file_name()).is_none_or(|f| f.to_string_lossy() != file.as_str()))
            .map(|(name, file)| format!("{name} (mapped to {file})"))
            .collect();
        wrong.sort();
        if let Some(first) = wrong.first() {
            return Err(Error::bad_model(&index_path, format!("{} tensor(s) not in the shard the index names, first {first}", wrong.len())));
        }
    }
    Ok(Weights::new(dir, tensors))
}

/// The chat template from `chat_template.jinja` or `tokenizer_config.json`.
fn chat_template_source(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return crate::fsutil::read_input_text(&jinja).map(Some);
    }
    let Some(cfg) = read_json_opt(&dir.join("tokenizer_config.json"))? else {
        return Ok(None);
    };
    Ok(match cfg.get("chat_template") {
        Some(Json::String(s)) => Some(s.clone()),
        // A list of named templates: take the one called "default".
        Some(Json::Array(list)) => {
            list.iter().find(|t| t.get("name").and_then(Json::as_str) == Some("default")).and_then(|t| t.get("template")?.as_str().map(str::to_string))
        }
        None | Some(Json::Null) => None,
        // Anything else is a broken file, not "no template" (which would pick another).
        Some(other) => {
            return Err(Error::bad_model(
                dir.join("tokenizer_config.json"),
                format!("chat_template is {other}; expected a Jinja string or a list of named templates"),
            ));
        }
    })
}
