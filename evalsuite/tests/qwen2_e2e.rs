//! A Qwen2-family HF checkpoint end to end, as Qwen2.5-Instruct models are laid out: q/k/v
//! biases, `tie_word_embeddings` both ways, weights sharded over two files with
//! `model.safetensors.index.json`. The test writes a small randomly initialized one (with
//! SmolLM2's tokenizer and chat template), checks tunelab's logits against candle-transformers'
//! qwen2 and HF transformers (in the Python scripts/test sets up), then trains an adapter,
//! generates and evaluates with the `tunelab` binary.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{model_path, root, run_ok, scratch};
use tunelab::model::{Architecture, ModelConfig, Weights};
use tunelab::Model;

/// A small Qwen2 with SmolLM2's vocabulary, so SmolLM2's tokenizer serves it.
fn config(tie: bool) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen2,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 49152,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 1024,
        tie_word_embeddings: tie,
    }
}

/// Writes the checkpoint: config, two shards and their index, tokenizer files.
fn write_checkpoint(dir: &Path, cfg: &ModelConfig, weights: &Weights, smollm: &Model) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "torch_dtype": "float32",
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "vocab_size": cfg.vocab_size, "hidden_act": "silu",
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps, "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings, "sliding_window": 4096, "max_window_layers": 0, "use_sliding_window": false,
        "bos_token_id": 1, "eos_token_id": 2,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut names: Vec<&String> = weights.tensors().keys().collect();
    names.sort();
    let (mut shards, mut weight_map) = ([HashMap::new(), HashMap::new()], serde_json::Map::new());
    for (i, name) in names.iter().enumerate() {
        let shard = i % 2;
        shards[shard].insert((*name).clone(), weights.tensors()[*name].clone());
        weight_map.insert((*name).clone(), format!("model-0000{}-of-00002.safetensors", shard + 1).into());
    }
    for (i, shard) in shards.iter().enumerate() {
        candle_core::safetensors::save(shard, dir.join(format!("model-0000{}-of-00002.safetensors", i + 1))).unwrap();
    }
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), smollm.tokenizer.inner().to_string(false).unwrap()).unwrap();
    let tokenizer_config =
        serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false, "chat_template": smollm.template.source()});
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string()).unwrap();
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn a_sharded_qwen2_checkpoint_matches_its_oracles_trains_generates_and_evaluates() {
    let python = std::env::var("TUNELAB_PEFT_PYTHON")
        .expect("set TUNELAB_PEFT_PYTHON to a Python with torch and transformers (scripts/test does): this test never skips");
    let smollm = Model::load(model_path()).unwrap();
    let mut untied = None;
    for tie in [false, true] {
        let dir = scratch(&format!("qwen2-tie-{tie}"));
        let cfg = config(tie);
        let weights = Weights::random(&cfg, 11, DType::F32, &Device::Cpu).unwrap();
        write_checkpoint(&dir, &cfg, &weights, &smollm);
        let model = Model::load(&dir).unwrap();
        assert_eq!(model.config(), &cfg, "tie {tie}");
        let prompt = model.template.render_prompt(None, "What is a SQL injection?").unwrap();
        let ids = model.tokenizer.encode_with_bos(&prompt).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let ours = model.transformer.forward(&input).unwrap().squeeze(0).unwrap();

        // candle-transformers' qwen2 on the tensors the shards hold.
        let (_, read) = Model::load_weights(&dir).unwrap();
        let ref_cfg: candle_transformers::models::qwen2::Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(read.tensors().clone(), DType::F32, &Device::Cpu);
        let mut reference = candle_transformers::models::qwen2::ModelForCausalLM::new(&ref_cfg, vb).unwrap();
        let last = reference.forward(&input, 0).unwrap().squeeze(0).unwrap().squeeze(0).unwrap();
        let d = max_abs_diff(&last, &ours.get(ids.len() - 1).unwrap());
        assert!(d < 1e-4, "tie {tie}: last-position logits differ from candle-transformers' qwen2 by {d}");

        // HF transformers, every position.
        let (ids_json, out) = (dir.join("ids.json"), dir.join("hf_logits.safetensors"));
        std::fs::write(&ids_json, serde_json::to_string(&ids).unwrap()).unwrap();
        let run = Command::new(&python).arg(root().join("tests/python/hf_logits.py")).args([&dir, &ids_json, &out]).output().unwrap();
        assert!(run.status.success(), "HF transformers failed:\n{}", String::from_utf8_lossy(&run.stderr));
        let hf = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        let d = max_abs_diff(&hf["logits"], &ours);
        eprintln!("tie {tie}: max |tunelab − HF transformers| over {} positions = {d:.2e}", ids.len());
        assert!(d < 1e-4, "tie {tie}: logits differ from HF transformers by {d}");
        if !tie {
            untied = Some(dir);
        }
    }

    // Train, generate and evaluate through the binary (untied checkpoint).
    let dir = untied.expect("the untied checkpoint was written");
    let (m, adapter) = (dir.to_str().unwrap().to_string(), dir.join("adapter"));
    let data = root().join("examples/security-audit/train.jsonl");
    let trained = run_ok(&[
        "train",
        "--model",
        &m,
        "--data",
        data.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--cutoff",
        "128",
        "--lr",
        "1e-3",
    ]);
    assert!(adapter.join("adapter_model.safetensors").exists(), "{trained}");
    let generated = run_ok(&["generate", "--model", &m, "--adapter", adapter.to_str().unwrap(), "--prompt", "Hello", "--max-tokens", "6"]);
    assert!(generated.contains("tok/s"), "{generated}");
    let suite = root().join("examples/security-audit/suite.toml");
    let runs = dir.join("runs");
    run_ok(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--model",
        &m,
        "--adapter",
        adapter.to_str().unwrap(),
        "--limit",
        "1",
        "--max-tokens",
        "8",
        "--out",
        runs.to_str().unwrap(),
        "--name",
        "qwen2",
    ]);
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(runs.join("qwen2/run.json")).unwrap()).unwrap();
    assert_eq!(record["counts"]["cases"], 4, "{record}");
}
