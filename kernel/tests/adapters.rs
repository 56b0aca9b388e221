//! PEFT format: key names and config fields, round trip, fit checks against the base
//! model, and merging (merged weights give the adapted model's logits).

mod common;

use candle_core::{DType, Device, Tensor};
use tunelab::lora::{AdapterSet, LoraConfig};
use tunelab::model::{Architecture, ModelConfig, Transformer, Weights};

fn cfg(hidden: usize, layers: usize) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        hidden_size: hidden,
        intermediate_size: 40,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 30,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 32,
        tie_word_embeddings: true,
    }
}

fn trained_adapter(model: &Transformer) -> AdapterSet {
    let adapter = AdapterSet::new(model, LoraConfig::default(), 1).unwrap();
    for (i, l) in adapter.layers().values().enumerate() {
        let b = (Tensor::ones(l.b.dims(), DType::F32, &Device::Cpu).unwrap() * (0.01 * (i as f64 + 1.0))).unwrap();
        l.b.set(&b).unwrap();
    }
    adapter
}

#[test]
fn peft_keys_config_and_round_trip() {
    let c = cfg(32, 2);
    let model = Transformer::load(&c, &Weights::random(&c, 1, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let adapter = trained_adapter(&model);
    let dir = common::scratch_dir("peft");
    adapter.save(&dir).unwrap();

    let tensors = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 2 * 7 * 2, "A and B for 7 projections in 2 layers");
    let a = &tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    assert_eq!(a.dims(), &[8, 32]);
    assert_eq!(tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].dims(), &[32, 8]);
    assert_eq!(tensors["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"].dims(), &[16, 8]);
    assert!(!tensors.keys().any(|k| k.contains("lm_head")));
    let bound = 1.0 / (32f32).sqrt();
    let a_vals: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    assert!(a_vals.iter().all(|v| v.abs() <= bound) && a_vals.iter().any(|v| v.abs() > bound / 2.0), "A is kaiming-uniform(a=√5)");

    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["r"], 8);
    assert_eq!(config["lora_alpha"], 16.0);
    assert_eq!(config["lora_dropout"], 0.0);
    assert_eq!(config["bias"], "none");
    assert_eq!(config["use_rslora"], false);
    assert_eq!(config["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]));
    assert!(config.get("base_model_name_or_path").is_some());

    let loaded = AdapterSet::load(&dir, &model).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 2, 7]], &Device::Cpu).unwrap();
    let x = adapter.apply(&model).forward(&ids).unwrap();
    let y = loaded.apply(&model).forward(&ids).unwrap();
    assert_eq!((x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn fresh_adapter_is_a_no_op_and_trained_one_changes_logits() {
    let c = cfg(32, 2);
    let model = Transformer::load(&c, &Weights::random(&c, 2, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let ids = Tensor::new(&[[3u32, 1, 4, 1, 5]], &Device::Cpu).unwrap();
    let base = model.forward(&ids).unwrap();
    let fresh_set = AdapterSet::new(&model, LoraConfig::default(), 3).unwrap();
    // B = 0 at init: every update is exactly zero, and the logits equal the base model's up to
    // the rounding of the adapted path's matmul (the CPU's SIMD width decides its summation order).
    for layer in fresh_set.layers().values() {
        assert_eq!(layer.delta_weight().unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0, "B = 0 at init");
    }
    let fresh = fresh_set.apply(&model).forward(&ids).unwrap();
    assert!((&base - fresh).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-5);
    let trained = trained_adapter(&model).apply(&model).forward(&ids).unwrap();
    assert!((base - trained).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-3);
}

#[test]
fn adapters_that_do_not_fit_the_base_are_refused_with_reasons() {
    let small = cfg(32, 2);
    let model = Transformer::load(&small, &Weights::random(&small, 1, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let dir = common::scratch_dir("mismatch");

    let wide = cfg(48, 2);
    let other = Transformer::load(&wide, &Weights::random(&wide, 1, DType::F32, &Device::Cpu).unwrap()).unwrap();
    trained_adapter(&other).save(&dir).unwrap();
    let e = AdapterSet::load(&dir, &model).unwrap_err().to_string();
    assert!(e.contains("does not fit the base model"), "{e}");
    assert!(e.contains("q_proj.lora_A.weight: shape [8, 48], but the base model needs [8, 32]"), "{e}");

    let deep = cfg(32, 3);
    let deeper = Transformer::load(&deep, &Weights::random(&deep, 1, DType::F32, &Device::Cpu).unwrap()).unwrap();
    trained_adapter(&deeper).save(&dir).unwrap();
    let e = AdapterSet::load(&dir, &model).unwrap_err().to_string();
    assert!(e.contains("the base model has no projection model.layers.2.self_attn.q_proj (2 layers)"), "{e}");

    trained_adapter(&model).save(&dir).unwrap();
    let path = dir.join("adapter_model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    t.remove("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight");
    candle_core::safetensors::save(&t, &path).unwrap();
    let e = AdapterSet::load(&dir, &model).unwrap_err().to_string();
    assert!(e.contains("model.layers.0.mlp.up_proj: lora_B is missing"), "{e}");

    // target_modules that leave out weights the file holds (PEFT would ignore them), or
    // name a module the model lacks: refused, naming the config.
    trained_adapter(&model).save(&dir).unwrap();
    let config_path = dir.join("adapter_config.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    for (targets, why) in [(serde_json::json!(["q_proj"]), "does not list"), (serde_json::json!(["qq_proj", "q_proj"]), "\"qq_proj\", which no projection")] {
        let mut config = saved.clone();
        config["target_modules"] = targets;
        std::fs::write(&config_path, config.to_string()).unwrap();
        let e = AdapterSet::load(&dir, &model).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains("adapter_config.json"), "{why}: {e}");
    }
    // A regular expression (PEFT's re.fullmatch form) leaves the weights to decide.
    let mut config = saved.clone();
    config["target_modules"] = serde_json::json!(".*(q|k|v|o|gate|up|down)_proj");
    std::fs::write(&config_path, config.to_string()).unwrap();
    assert_eq!(AdapterSet::load(&dir, &model).unwrap().layers().len(), trained_adapter(&model).layers().len());

    // A PEFT config asking for DoRA: refused naming the field, not loaded as plain LoRA.
    let mut config = saved.clone();
    config["use_dora"] = serde_json::json!(true);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let e = AdapterSet::load(&dir, &model).unwrap_err().to_string();
    assert!(e.contains("use_dora is true") && e.contains("adapter_config.json"), "{e}");

    std::fs::write(dir.join("adapter_config.json"), "{\"peft_type\": \"LORA\",\n \"r\": }").unwrap();
    let e = AdapterSet::load(&dir, &model).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json") && e.contains("line 2"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn merged_weights_reproduce_the_adapted_model() {
    let c = cfg(32, 2);
    let weights = Weights::random(&c, 4, DType::F32, &Device::Cpu).unwrap();
    let model = Transformer::load(&c, &weights).unwrap();
    let adapter = trained_adapter(&model);
    let merged = Transformer::load(&c, &adapter.merge_into(weights.clone()).unwrap()).unwrap();
    let ids = Tensor::new(&[[2u32, 7, 1, 8, 2, 8]], &Device::Cpu).unwrap();
    let d =
        (adapter.apply(&model).forward(&ids).unwrap() - merged.forward(&ids).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "merged differs by {d}");
    let folded = adapter.merged(&model).unwrap();
    assert!(folded.projections().iter().all(|(_, p)| p.lora().is_none()));
    let d =
        (adapter.apply(&model).forward(&ids).unwrap() - folded.forward(&ids).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "folded transformer differs by {d}");
}
