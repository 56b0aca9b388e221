//! `tunelab export llamafactory`: a dataset and tunelab's training settings as a
//! LLaMA-Factory project, so the same fine-tune can run on a GPU cluster (torchrun,
//! DeepSpeed) and its predictions come back to tunelab for scoring.
//!
//! Written into the output directory:
//! - `data/<name>.json` (and `data/<name>_eval.json`): the examples in LLaMA-Factory's
//!   `alpaca` form when every example is one exchange, else its `sharegpt` form;
//! - `data/dataset_info.json`: one entry per file (`file_name`, `formatting`, `columns`, and
//!   `tags` for sharegpt);
//! - `train_lora_sft.yaml`: LoRA SFT with the hyper-parameters `tunelab train` would use;
//! - `predict.yaml`: greedy predictions of the held-out data, whose
//!   `generated_predictions.jsonl` `tunelab eval run --predictions` scores;
//! - `README.md`: single-node, multi-node and DeepSpeed launch lines.
//!
//! Every YAML key is one LLaMA-Factory's argument dataclasses (or transformers'
//! `Seq2SeqTrainingArguments`, which they extend) accept: [`ACCEPTED_KEYS`], checked against
//! the version named in [`CHECKED_VERSION`].

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tunelab::chat::Role;
use tunelab::data::{Dataset, Example};
use tunelab::train::TrainConfig;

use crate::error::{Error, Result};

/// The LLaMA-Factory source the keys, formats and template names were checked against:
/// `hparams/{model,data,finetuning,generating,training}_args.py`, `data/parser.py`
/// (`DatasetAttr`) and `data/template.py`. (`overwrite_output_dir` is marked deprecated
/// there but still read; without it a rerun resumes from the old checkpoints.)
pub const CHECKED_VERSION: &str = "LLaMA-Factory 0.9.6.dev0 (commit ff6d4d1, 2026-08-18)";

/// Keys the exported YAML files use, each a field of LLaMA-Factory's `ModelArguments`,
/// `DataArguments`, `FinetuningArguments`, `GeneratingArguments` or the training arguments.
pub const ACCEPTED_KEYS: &[&str] = &[
    "model_name_or_path",
    "adapter_name_or_path",
    "stage",
    "do_train",
    "do_predict",
    "finetuning_type",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "dataset",
    "eval_dataset",
    "dataset_dir",
    "template",
    "cutoff_len",
    "val_size",
    "overwrite_cache",
    "output_dir",
    "logging_steps",
    "save_steps",
    "plot_loss",
    "overwrite_output_dir",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "use_rslora",
    "train_on_prompt",
    "lr_scheduler_type",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "eval_strategy",
    "predict_with_generate",
    "do_sample",
    "max_new_tokens",
    "report_to",
];

/// The chat templates LLaMA-Factory 0.9.5 (PyPI, the version the tests run) registers in
/// `data/template.py` (121 names). A `--template` outside this list is written as given
/// (newer LLaMA-Factory releases add templates) with a warning, since a misspelt name only
/// fails once the training job starts.
pub const KNOWN_TEMPLATES: &[&str] = &[
    "aeva",
    "alpaca",
    "bailing",
    "bailing_v2",
    "breeze",
    "chatglm3",
    "chatml",
    "chatml_de",
    "cohere",
    "cpm4",
    "dbrx",
    "deepseek",
    "deepseek3",
    "deepseekcoder",
    "deepseekr1",
    "default",
    "dots_ocr",
    "empty",
    "ernie",
    "ernie_nothink",
    "ernie_vl",
    "exaone",
    "falcon",
    "falcon_h1",
    "fewshot",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gemma4n",
    "glm4",
    "glm4_5v",
    "glm4_7",
    "glm4_moe",
    "glm4v",
    "glm_ocr",
    "glmz1",
    "gpt_oss",
    "granite3",
    "granite3_vision",
    "granite4",
    "hunyuan",
    "hunyuan_small",
    "hy3",
    "index",
    "intern2",
    "intern_s1",
    "intern_vl",
    "keye_vl",
    "kimi_vl",
    "lfm2",
    "lfm2_vl",
    "llama2",
    "llama2_zh",
    "llama3",
    "llama4",
    "llava",
    "llava_next",
    "llava_next_llama3",
    "llava_next_mistral",
    "llava_next_qwen",
    "llava_next_video",
    "llava_next_video_mistral",
    "llava_next_video_yi",
    "llava_next_yi",
    "mimo",
    "mimo_v2",
    "mimo_vl",
    "minicpm_o",
    "minicpm_v",
    "minicpm_v_4_6",
    "minimax1",
    "minimax2",
    "ministral",
    "ministral3",
    "mistral",
    "mistral_small",
    "mllama",
    "moonlight",
    "olmo",
    "openchat",
    "openchat-3.6",
    "opencoder",
    "paligemma",
    "paligemma_chat",
    "phi",
    "phi4",
    "phi4_mini",
    "phi_small",
    "pixtral",
    "qwen",
    "qwen2_audio",
    "qwen2_omni",
    "qwen2_vl",
    "qwen3",
    "qwen3_5",
    "qwen3_5_nothink",
    "qwen3_6",
    "qwen3_nothink",
    "qwen3_omni",
    "qwen3_omni_nothink",
    "qwen3_vl",
    "qwen3_vl_nothink",
    "sailor",
    "seed_coder",
    "seed_oss",
    "smollm",
    "smollm2",
    "solar",
    "starchat",
    "telechat2",
    "vicuna",
    "video_llava",
    "xuanyuan",
    "yi",
    "yi_vl",
    "youtu",
    "youtu_vl",
    "yuan",
    "zephyr",
];

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Training data (any format tunelab reads).
    pub data: PathBuf,
    /// Held-out data for evaluation and predictions (else 10 % of the training data is held
    /// out by LLaMA-Factory's `val_size`).
    pub eval_data: Option<PathBuf>,
    /// The base model as LLaMA-Factory should load it (hub id or path).
    pub model: String,
    /// LLaMA-Factory's chat template name (guessed from `model` when `None`).
    pub template: Option<String>,
    /// The dataset's name in `dataset_info.json`.
    pub name: String,
    /// tunelab's training settings to translate.
    pub train: TrainConfig,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// `alpaca` or `sharegpt`.
    pub formatting: &'static str,
    /// Training examples written.
    pub examples: usize,
    /// The template used.
    pub template: String,
    /// Things worth checking before launching the job (an unknown template name).
    pub warnings: Vec<String>,
}

/// LLaMA-Factory's template for a model name: `qwen3`, `qwen` (Qwen2/2.5), `llama3`,
/// `smollm2`, `smollm`; `None` when the name says nothing known (pass `--template`).
pub fn guess_template(model: &str) -> Option<&'static str> {
    let m = model.to_lowercase();
    [("qwen3", "qwen3"), ("qwen", "qwen"), ("llama-3", "llama3"), ("llama3", "llama3"), ("smollm2", "smollm2"), ("smollm", "smollm")]
        .iter()
        .find(|(needle, _)| m.contains(needle))
        .map(|(_, t)| *t)
}

/// Whether `ex` is one exchange (optional system, one user turn, one assistant turn).
fn single_turn(ex: &Example) -> bool {
    let roles: Vec<Role> = ex.messages.iter().map(|m| m.role).filter(|r| *r != Role::System).collect();
    roles == [Role::User, Role::Assistant] && ex.messages.iter().take_while(|m| m.role == Role::System).count() == ex.messages.len() - 2
}

fn system_of(ex: &Example) -> Option<&str> {
    ex.messages.iter().find(|m| m.role == Role::System).map(|m| m.content.as_str())
}

fn alpaca_record(ex: &Example) -> Value {
    let turn = |role: Role| ex.messages.iter().find(|m| m.role == role).map_or("", |m| m.content.as_str());
    let mut r = json!({"instruction": turn(Role::User), "input": "", "output": turn(Role::Assistant)});
    if let Some(s) = system_of(ex) {
        r["system"] = Value::from(s);
    }
    r
}

/// A conversation in sharegpt form; a system message is its first turn (`from: system`,
/// LLaMA-Factory's default `system_tag`).
fn sharegpt_record(ex: &Example) -> Value {
    let from = |role: Role| match role {
        Role::System => "system",
        Role::User => "human",
        Role::Assistant => "gpt",
    };
    let turns: Vec<Value> = ex.messages.iter().map(|m| json!({"from": from(m.role), "value": m.content})).collect();
    json!({"conversations": turns})
}

fn dataset_entry(file: &str, formatting: &str) -> Value {
    match formatting {
        "alpaca" => {
            json!({"file_name": file, "formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}})
        }
        _ => json!({
            "file_name": file,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system"}
        }),
    }
}

/// One YAML scalar: strings double-quoted (JSON strings are valid YAML), booleans and
/// integers as they are, and floats so that PyYAML (YAML 1.1, which LLaMA-Factory reads
/// with) takes them as floats: in exponent form it needs a dot and a signed exponent
/// (`5.0e-5`; `5e-5` would be a string).
fn yaml_value(v: &Value) -> String {
    match v {
        Value::String(s) => Value::from(s.as_str()).to_string(),
        Value::Number(n) if n.is_f64() => yaml_float(n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    }
}

fn yaml_float(x: f64) -> String {
    if x == 0.0 || (1e-3..1e15).contains(&x.abs()) {
        let plain = format!("{x}");
        return if plain.contains('.') { plain } else { format!("{plain}.0") };
    }
    let exp = format!("{x:e}");
    let (mantissa, exponent) = exp.split_once('e').expect("exponent form");
    let mantissa = if mantissa.contains('.') { mantissa.to_string() } else { format!("{mantissa}.0") };
    let exponent = if exponent.starts_with('-') { exponent.to_string() } else { format!("+{exponent}") };
    format!("{mantissa}e{exponent}")
}

/// A YAML file of `### section` blocks of `key: value` lines. Every key must be in
/// [`ACCEPTED_KEYS`].
fn yaml(sections: &[(&str, Vec<(&str, Value)>)]) -> String {
    let mut out = String::new();
    for (title, entries) in sections {
        out.push_str(&format!("### {title}\n"));
        for (k, v) in entries {
            assert!(ACCEPTED_KEYS.contains(k), "{k} is not a key LLaMA-Factory accepts");
            out.push_str(&format!("{k}: {}\n", yaml_value(v)));
        }
        out.push('\n');
    }
    out
}

fn load(path: &Path) -> Result<Dataset> {
    let ds = Dataset::load(path)?;
    if !ds.issues.is_empty() {
        let first = &ds.issues[0];
        return Err(Error::Invalid(format!(
            "{}: {} unreadable record(s), the first: {first}; fix them (tunelab data check) before exporting",
            path.display(),
            ds.issues.len()
        )));
    }
    if ds.examples.is_empty() {
        return Err(Error::Invalid(format!("{} holds no examples", path.display())));
    }
    Ok(ds)
}

/// Writes the LLaMA-Factory project into `out` (created; the files it writes are replaced,
/// and `data/dataset_info.json` keeps the other datasets it lists).
pub fn export(opts: &ExportOptions, out: &Path) -> Result<Exported> {
    let name = &opts.name;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(Error::Invalid(format!("dataset name {name:?}: use letters, digits, '_' and '-'")));
    }
    let template = match (&opts.template, guess_template(&opts.model)) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_string(),
        (None, None) => return Err(Error::Invalid(format!("no LLaMA-Factory template is known for {:?}; name one with --template", opts.model))),
    };
    // Settings LLaMA-Factory would reject late (or train on silently) are refused here.
    let t = &opts.train;
    t.validate().and_then(|()| t.lora.check_usable()).map_err(|m| Error::Invalid(format!("training settings (--train-config): {m}")))?;
    let lora = t.lora.clone().with_targets(&t.lora.target_modules).map_err(|e| Error::Invalid(format!("training settings (--train-config): {e}")))?;
    let train = load(&opts.data)?;
    let eval = opts.eval_data.as_deref().map(load).transpose()?;
    let all_single = train.examples.iter().chain(eval.iter().flat_map(|d| d.examples.iter())).all(single_turn);
    let formatting = if all_single { "alpaca" } else { "sharegpt" };
    let record = |ex: &Example| if all_single { alpaca_record(ex) } else { sharegpt_record(ex) };
    let data_dir = out.join("data");
    tunelab::fsutil::create_dir_all(&data_dir)?;
    let mut files = Vec::new();
    let mut info = serde_json::Map::new();
    let mut write_data = |suffix: &str, ds: &Dataset| -> Result<String> {
        let file = format!("{name}{suffix}.json");
        let records: Vec<Value> = ds.examples.iter().map(record).collect();
        let text = serde_json::to_string_pretty(&records).expect("records serialise");
        tunelab::fsutil::write_atomic(&data_dir.join(&file), text.as_bytes())?;
        info.insert(format!("{name}{suffix}"), dataset_entry(&file, formatting));
        files.push(format!("data/{file}"));
        Ok(format!("{name}{suffix}"))
    };
    let train_name = write_data("", &train)?;
    let eval_name = eval.as_ref().map(|d| write_data("_eval", d)).transpose()?;
    // A project's dataset_info.json lists its other datasets too: ours are added or
    // replaced, the rest kept.
    let info_path = data_dir.join("dataset_info.json");
    let mut all_info = existing_dataset_info(&info_path)?;
    all_info.extend(info);
    tunelab::fsutil::write_atomic(&info_path, serde_json::to_string_pretty(&Value::Object(all_info)).expect("serialises").as_bytes())?;
    files.push("data/dataset_info.json".into());

    let output_dir = format!("saves/{name}-lora");
    let mut dataset = vec![
        ("dataset", Value::from(train_name.clone())),
        ("dataset_dir", Value::from("data")),
        ("template", Value::from(template.clone())),
        ("cutoff_len", Value::from(t.cutoff_len)),
        ("train_on_prompt", Value::from(t.train_on_prompt)),
        ("overwrite_cache", Value::from(true)),
    ];
    match &eval_name {
        Some(e) => dataset.push(("eval_dataset", Value::from(e.clone()))),
        None => dataset.push(("val_size", Value::from(0.1))),
    }
    let train_yaml = yaml(&[
        ("model", vec![("model_name_or_path", Value::from(opts.model.clone()))]),
        (
            "method",
            vec![
                ("stage", Value::from("sft")),
                ("do_train", Value::from(true)),
                ("finetuning_type", Value::from("lora")),
                ("lora_rank", Value::from(lora.r)),
                // LLaMA-Factory's `lora_alpha` is an integer field.
                ("lora_alpha", if lora.lora_alpha.fract() == 0.0 { Value::from(lora.lora_alpha as i64) } else { Value::from(lora.lora_alpha) }),
                ("lora_dropout", Value::from(lora.lora_dropout)),
                ("lora_target", Value::from(lora_target(&lora.target_modules))),
                ("use_rslora", Value::from(lora.use_rslora)),
            ],
        ),
        ("dataset", dataset),
        (
            "output",
            vec![
                ("output_dir", Value::from(output_dir.clone())),
                ("logging_steps", Value::from(1)),
                ("save_steps", Value::from(if t.save_steps > 0 { t.save_steps } else { 500 })),
                ("plot_loss", Value::from(true)),
                ("overwrite_output_dir", Value::from(true)),
                ("report_to", Value::from("none")),
            ],
        ),
        (
            "train",
            vec![
                ("per_device_train_batch_size", Value::from(t.batch_size)),
                ("gradient_accumulation_steps", Value::from(t.grad_accum)),
                ("learning_rate", Value::from(t.learning_rate)),
                ("num_train_epochs", Value::from(t.epochs as f64)),
                // transformers' default -1 means "run the epochs"; tunelab's 0 means the same.
                ("max_steps", Value::from(if t.max_steps > 0 { t.max_steps as i64 } else { -1 })),
                ("lr_scheduler_type", Value::from("cosine")),
                ("warmup_ratio", Value::from(t.warmup_ratio)),
                ("weight_decay", Value::from(t.weight_decay)),
                ("max_grad_norm", Value::from(t.max_grad_norm)),
                ("seed", Value::from(t.seed)),
            ],
        ),
        ("eval", vec![("per_device_eval_batch_size", Value::from(t.batch_size)), ("eval_strategy", Value::from("epoch"))]),
    ]);
    tunelab::fsutil::write_atomic(&out.join("train_lora_sft.yaml"), train_yaml.as_bytes())?;
    files.push("train_lora_sft.yaml".into());

    let predict_on = eval_name.clone().unwrap_or_else(|| train_name.clone());
    let predict_yaml = yaml(&[
        ("model", vec![("model_name_or_path", Value::from(opts.model.clone())), ("adapter_name_or_path", Value::from(output_dir.clone()))]),
        ("method", vec![("stage", Value::from("sft")), ("do_predict", Value::from(true)), ("finetuning_type", Value::from("lora"))]),
        (
            "dataset",
            vec![
                ("eval_dataset", Value::from(predict_on)),
                ("dataset_dir", Value::from("data")),
                ("template", Value::from(template.clone())),
                ("cutoff_len", Value::from(t.cutoff_len)),
            ],
        ),
        (
            "output",
            vec![("output_dir", Value::from(format!("{output_dir}/predict"))), ("overwrite_output_dir", Value::from(true)), ("report_to", Value::from("none"))],
        ),
        (
            "predict",
            vec![
                ("per_device_eval_batch_size", Value::from(1)),
                ("predict_with_generate", Value::from(true)),
                ("do_sample", Value::from(false)),
                ("max_new_tokens", Value::from(512)),
            ],
        ),
    ]);
    tunelab::fsutil::write_atomic(&out.join("predict.yaml"), predict_yaml.as_bytes())?;
    files.push("predict.yaml".into());
    tunelab::fsutil::write_atomic(&out.join("README.md"), readme(name, &output_dir, eval_name.is_some()).as_bytes())?;
    files.push("README.md".into());
    let mut warnings = Vec::new();
    if !KNOWN_TEMPLATES.contains(&template.as_str()) {
        warnings.push(format!("template {template:?} is not one LLaMA-Factory 0.9.5 knows; check the name against your LLaMA-Factory's data/template.py"));
    }
    Ok(Exported { files, formatting, examples: train.examples.len(), template, warnings })
}

/// LLaMA-Factory's `lora_target`: `all` for every projection, else the module names.
fn lora_target(targets: &[String]) -> String {
    if tunelab::lora::ALL_TARGETS.iter().all(|t| targets.iter().any(|x| x == t)) {
        "all".into()
    } else {
        targets.join(",")
    }
}

/// The entries of an existing `dataset_info.json` (none when there is no file); a file
/// that is not a JSON object is an error, never overwritten.
fn existing_dataset_info(path: &Path) -> Result<serde_json::Map<String, Value>> {
    if !path.exists() {
        return Ok(serde_json::Map::new());
    }
    let text = tunelab::fsutil::read_input_text(path)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(entries)) => Ok(entries),
        _ => Err(Error::Invalid(format!("{} is not a JSON object of datasets; move it away to export here", path.display()))),
    }
}

fn readme(name: &str, output_dir: &str, has_eval: bool) -> String {
    let predicted = if has_eval {
        format!("the held-out set (`{name}_eval`)")
    } else {
        format!("the training set (`{name}`; export with --eval-data to predict held-out cases)")
    };
    format!(
        "# {name}: LoRA SFT with LLaMA-Factory (exported by tunelab)\n\n\
Run from this directory, with LLaMA-Factory installed (`pip install llamafactory`).\n\n\
## One machine\n\n    llamafactory-cli train train_lora_sft.yaml\n\n\
## Several machines (torchrun)\n\nOn every node, with the same MASTER_ADDR and MASTER_PORT and its own NODE_RANK:\n\n    \
FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=0 MASTER_ADDR=192.168.0.1 MASTER_PORT=29500 llamafactory-cli train train_lora_sft.yaml\n    \
FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=1 MASTER_ADDR=192.168.0.1 MASTER_PORT=29500 llamafactory-cli train train_lora_sft.yaml\n\n\
## DeepSpeed ZeRO\n\nCopy a DeepSpeed config from LLaMA-Factory's `examples/deepspeed/` (`ds_z2_config.json` for ZeRO-2,\n\
`ds_z3_config.json` for ZeRO-3), add `deepspeed: ds_z3_config.json` to `train_lora_sft.yaml`, then:\n\n    \
FORCE_TORCHRUN=1 llamafactory-cli train train_lora_sft.yaml\n\n\
## Predictions, scored by tunelab\n\n`predict.yaml` decodes {predicted} greedily with the trained adapter:\n\n    \
llamafactory-cli train predict.yaml\n    \
tunelab eval run --suite SUITE.toml --predictions {output_dir}/predict/generated_predictions.jsonl --name lf-adapter\n\n\
tunelab matches each prediction to its case by prompt. The adapter in `{output_dir}` is in PEFT's format and\n\
loads in tunelab too: `tunelab eval run --suite SUITE.toml --model BASE --adapter {output_dir}`.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_pyyaml_floats() {
        assert_eq!(yaml_float(5e-5), "5.0e-5");
        assert_eq!(yaml_float(1.5e-6), "1.5e-6");
        assert_eq!(yaml_float(2e20), "2.0e+20");
        assert_eq!(yaml_float(0.1), "0.1");
        assert_eq!(yaml_float(3.0), "3.0");
        assert_eq!(yaml_float(0.0), "0.0");
    }

    #[test]
    fn guessed_templates_are_ones_llama_factory_knows() {
        for model in [
            "Qwen/Qwen3-8B",
            "Qwen/Qwen2.5-7B-Instruct",
            "meta-llama/Llama-3.1-8B-Instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "HuggingFaceTB/SmolLM-135M",
        ] {
            let t = guess_template(model).unwrap();
            assert!(KNOWN_TEMPLATES.contains(&t), "{model} → {t}");
        }
    }
}
