//! HF model directories: the real SmolLM2 re-saved as an HF checkpoint loads to the same
//! logits as the GGUF; a tiny Qwen2 (q/k/v biases) matches candle-transformers' qwen2;
//! malformed directories and files give errors that name what is wrong.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tunelab::model::gguf::GgufFile;
use tunelab::model::{Architecture, ModelConfig, Transformer, Weights};
use tunelab::Model;

fn write_hf_dir(dir: &Path, config: serde_json::Value, tensors: &HashMap<String, Tensor>, tokenizer_json: Option<&str>, tokenizer_config: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
    if let Some(t) = tokenizer_json {
        std::fs::write(dir.join("tokenizer.json"), t).unwrap();
    }
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string()).unwrap();
}

fn hf_config(cfg: &ModelConfig, arch: &str) -> serde_json::Value {
    serde_json::json!({
        "architectures": [arch],
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings, "tie_word_embeddings": cfg.tie_word_embeddings,
        "sliding_window": 4096, "max_window_layers": 0, "use_sliding_window": false, "hidden_act": "silu",
    })
}

fn tiny(arch: Architecture) -> ModelConfig {
    ModelConfig {
        architecture: arch,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 50,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
    }
}

#[test]
fn smollm_as_hf_directory_equals_the_gguf() {
    let path = common::smollm_path();
    let gguf_model = Model::load(&path).unwrap();
    let mut file = GgufFile::open(&path).unwrap();
    let cfg = file.config().unwrap();
    let weights = file.weights(&cfg, &Device::Cpu).unwrap();
    let dir = common::scratch_dir("smollm-hf");
    let tokenizer_json = gguf_model.tokenizer.inner().to_string(false).unwrap();
    let tcfg = serde_json::json!({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false,
        "chat_template": gguf_model.template.source(),
    });
    write_hf_dir(&dir, hf_config(&cfg, "LlamaForCausalLM"), weights.tensors(), Some(&tokenizer_json), tcfg);

    let hf_model = Model::load(&dir).unwrap();
    assert_eq!(hf_model.config(), gguf_model.config());
    let prompt = hf_model.template.render_prompt(Some("Be brief."), "Name a prime number.").unwrap();
    assert_eq!(prompt, gguf_model.template.render_prompt(Some("Be brief."), "Name a prime number.").unwrap());
    let ids = hf_model.tokenizer.encode(&prompt).unwrap();
    assert_eq!(ids, gguf_model.tokenizer.encode(&prompt).unwrap());
    assert_eq!(hf_model.tokenizer.stop_ids(), gguf_model.tokenizer.stop_ids());
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let a = hf_model.transformer.forward(&input).unwrap();
    let b = gguf_model.transformer.forward(&input).unwrap();
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(d, 0.0, "same weights must give identical logits");

    // A chat_template that is neither text nor a list is a broken file, not "no template"
    // (which would silently pick another); rope_scaling would give wrong positions.
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": 5}"#).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("tokenizer_config.json") && e.contains("chat_template is 5"), "{e}");
    let mut config = hf_config(&cfg, "LlamaForCausalLM");
    config["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 32.0});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json") && e.contains("rope_scaling") && e.contains("not supported"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Oracle for the Qwen2 variant: candle-transformers' qwen2 on the same random weights.
#[test]
fn qwen2_matches_candle_transformers_qwen2() {
    let cfg = tiny(Architecture::Qwen2);
    let weights = Weights::random(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
    let ours = Transformer::load(&cfg, &weights).unwrap();
    let ref_cfg: candle_transformers::models::qwen2::Config = serde_json::from_value(hf_config(&cfg, "Qwen2ForCausalLM")).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(weights.tensors().clone(), DType::F32, &Device::Cpu);
    let mut reference = candle_transformers::models::qwen2::ModelForCausalLM::new(&ref_cfg, vb).unwrap();
    let ids = Tensor::new(&[[3u32, 17, 4, 42, 8, 1, 29]], &Device::Cpu).unwrap();
    let want = reference.forward(&ids, 0).unwrap().squeeze(0).unwrap().squeeze(0).unwrap();
    let got = ours.forward(&ids).unwrap().get(0).unwrap().get(6).unwrap();
    let d = (want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "qwen2 logits differ by {d}");
    // The biases are really used: zeroing one changes the output.
    let mut tensors = weights.tensors().clone();
    let bias = tensors["model.layers.0.self_attn.q_proj.bias"].zeros_like().unwrap();
    tensors.insert("model.layers.0.self_attn.q_proj.bias".into(), bias);
    let without = Transformer::load(&cfg, &Weights::new("<t>", tensors)).unwrap().forward(&ids).unwrap().get(0).unwrap().get(6).unwrap();
    let d = (without - ours.forward(&ids).unwrap().get(0).unwrap().get(6).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 1e-4, "q bias has no effect");
}

fn load_err(path: &Path) -> String {
    Model::load(path).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn malformed_hf_directories_are_reported_precisely() {
    let cfg = tiny(Architecture::Llama);
    let weights = Weights::random(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
    let root = common::scratch_dir("bad-hf");

    let dir = root.join("gpt2");
    write_hf_dir(&dir, hf_config(&cfg, "GPT2LMHeadModel"), weights.tensors(), None, serde_json::json!({}));
    let e = load_err(&dir);
    assert!(e.contains("unsupported architecture \"GPT2LMHeadModel\""), "{e}");

    let dir = root.join("missing-tensor");
    let mut t = weights.tensors().clone();
    t.remove("model.layers.1.mlp.up_proj.weight");
    write_hf_dir(&dir, hf_config(&cfg, "LlamaForCausalLM"), &t, None, serde_json::json!({}));
    let e = load_err(&dir);
    assert!(e.contains("missing tensor model.layers.1.mlp.up_proj.weight (expected shape [48, 32])"), "{e}");

    let dir = root.join("wrong-shape");
    let mut t = weights.tensors().clone();
    t.insert("model.layers.0.self_attn.k_proj.weight".into(), Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap());
    write_hf_dir(&dir, hf_config(&cfg, "LlamaForCausalLM"), &t, None, serde_json::json!({}));
    let e = load_err(&dir);
    assert!(e.contains("tensor model.layers.0.self_attn.k_proj.weight has shape [8, 32], expected [16, 32]"), "{e}");

    let dir = root.join("truncated");
    write_hf_dir(&dir, hf_config(&cfg, "LlamaForCausalLM"), weights.tensors(), None, serde_json::json!({}));
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("truncated or corrupt"), "{e}");

    let dir = root.join("bad-config");
    write_hf_dir(&dir, hf_config(&cfg, "LlamaForCausalLM"), weights.tensors(), None, serde_json::json!({}));
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 32,\n \"oops\" }").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json") && e.contains("line 2"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn truncated_gguf_and_missing_model_are_reported_precisely() {
    let path = common::smollm_path();
    let root = common::scratch_dir("bad-gguf");
    let bytes = std::fs::read(&path).unwrap();

    let cut = root.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&cut);
    assert!(e.contains("cut.gguf") && e.contains("file is truncated: tensor"), "{e}");

    let header_only = root.join("header.gguf");
    std::fs::write(&header_only, &bytes[..4096]).unwrap();
    let e = load_err(&header_only);
    assert!(e.contains("header.gguf") && e.contains("not a readable GGUF file"), "{e}");

    // A header whose dimensions multiply past 2⁶⁴ (wrapping to 0 bytes) is not a tensor
    // that fits in 32 bytes of data.
    let mut hostile = b"GGUF".to_vec();
    hostile.extend(3u32.to_le_bytes());
    hostile.extend(1u64.to_le_bytes()); // tensors
    hostile.extend(0u64.to_le_bytes()); // metadata entries
    hostile.extend(1u64.to_le_bytes());
    hostile.push(b'w');
    hostile.extend(2u32.to_le_bytes());
    hostile.extend((1u64 << 32).to_le_bytes());
    hostile.extend((1u64 << 32).to_le_bytes());
    hostile.extend(0u32.to_le_bytes()); // f32
    hostile.extend(0u64.to_le_bytes()); // offset
    hostile.resize(hostile.len().next_multiple_of(32) + 32, 0);
    let wrapped = root.join("wrapped.gguf");
    std::fs::write(&wrapped, &hostile).unwrap();
    let e = GgufFile::open(&wrapped).err().expect("a tensor of 2^64 values in 32 bytes").to_string();
    assert!(e.contains("wrapped.gguf") && e.contains("file is truncated: tensor w"), "{e}");

    // A header that claims fewer layers than the file's tensors hold is refused (the rest
    // would be ignored, and the model answer nonsense).
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("the model has llama.block_count") + key.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 4, "block_count is a u32");
    let mut fewer = bytes.clone();
    fewer[at + 4..at + 8].copy_from_slice(&2u32.to_le_bytes());
    let two = root.join("two-layers.gguf");
    std::fs::write(&two, &fewer).unwrap();
    let e = load_err(&two);
    assert!(e.contains("two-layers.gguf") && e.contains("past block_count 2"), "{e}");

    let not_gguf = root.join("text.gguf");
    std::fs::write(&not_gguf, "hello").unwrap();
    let e = load_err(&not_gguf);
    assert!(e.contains("not a readable GGUF file"), "{e}");

    let e = load_err(Path::new("no-such-model.gguf"));
    assert!(e.contains("model not found") && e.contains("scripts/fetch-models"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A sharded checkpoint is read through its index: a file beside the shards that the index
/// does not name (an adapter saved there) is not a weight, a missing shard is named, and
/// a tensor stored in another shard than the index says is refused.
#[test]
fn sharded_checkpoints_follow_their_index() {
    let cfg = tiny(Architecture::Qwen2);
    let weights = Weights::random(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
    let dir = common::scratch_dir("hf-sharded");
    write_hf_dir(&dir, hf_config(&cfg, "Qwen2ForCausalLM"), weights.tensors(), None, serde_json::json!({}));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<&String> = weights.tensors().keys().collect();
    names.sort();
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        shards[i % 2].insert((*name).clone(), weights.tensors()[*name].clone());
        map.insert((*name).clone(), format!("part-{}.safetensors", i % 2).into());
    }
    for (i, shard) in shards.iter().enumerate() {
        candle_core::safetensors::save(shard, dir.join(format!("part-{i}.safetensors"))).unwrap();
    }
    let index = |map: &serde_json::Map<String, serde_json::Value>| {
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": map }).to_string()).unwrap()
    };
    index(&map);
    // A stray safetensors file whose tensor would clash with the model's.
    let stray: HashMap<String, Tensor> = [("model.norm.weight".to_string(), Tensor::zeros(cfg.hidden_size, DType::F32, &Device::Cpu).unwrap())].into();
    candle_core::safetensors::save(&stray, dir.join("adapter_model.safetensors")).unwrap();
    let (_, read) = Model::load_weights(&dir).unwrap();
    assert_eq!(read.tensors().len(), weights.tensors().len());
    assert_eq!(read.tensors()["model.norm.weight"].to_vec1::<f32>().unwrap(), weights.tensors()["model.norm.weight"].to_vec1::<f32>().unwrap());

    let mut moved = map.clone();
    let other = if map["model.norm.weight"] == "part-1.safetensors" { "part-0.safetensors" } else { "part-1.safetensors" };
    moved.insert("model.norm.weight".into(), other.into());
    index(&moved);
    let err = load_err(&dir);
    assert!(err.contains("model.norm.weight") && err.contains("not in the shard"), "{err}");

    index(&map);
    std::fs::remove_file(dir.join("part-1.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("part-1.safetensors") && err.contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
