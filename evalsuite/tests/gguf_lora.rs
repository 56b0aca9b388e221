//! `tunelab export gguf-lora` against llama.cpp itself (llama-cpp-python, in the Python
//! scripts/test sets up): an adapter on every projection, exported for SmolLM2, changes
//! llama.cpp's logits as it changes tunelab's.
//!
//! The base given to llama.cpp is the same GGUF with every tensor stored as f32 (the Q4_1
//! file's own values), so llama.cpp multiplies in f32 and its base logits agree with
//! tunelab's to ~1e-4; on the Q4_1 file it would quantize activations to 8 bits and differ
//! by ~2. A LoRA whose q/k rows were not permuted to llama.cpp's rope layout, or whose alpha
//! was off, changes the logits by several units differently.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{model_path, root, scratch, tunelab};
use tunelab::{LoraConfig, Model};

/// The GGUF at `from` rewritten at `to` with every tensor in f32 (metadata unchanged).
fn f32_copy(from: &Path, to: &Path) {
    let mut file = std::fs::File::open(from).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors = Vec::new();
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
        let f = q.dequantize(&Device::Cpu).unwrap();
        tensors.push((name.clone(), QTensor::quantize(&f, GgmlDType::F32).unwrap()));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(to).unwrap(), &metadata, &tensors).unwrap();
}

fn llamacpp_logits(model: &Path, lora: Option<&Path>, ids_json: &Path) -> Vec<f32> {
    let python = std::env::var("TUNELAB_TEST_PYTHON").expect("set TUNELAB_TEST_PYTHON (scripts/test does): this test never skips");
    let lora = lora.map_or_else(|| "-".to_string(), |p| p.display().to_string());
    let out = Command::new(python).arg(root().join("tests/python/llamacpp_logits.py")).arg(model).arg(&lora).arg(ids_json).output().unwrap();
    assert!(out.status.success(), "llama.cpp failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn an_exported_adapter_changes_llama_cpp_s_logits_as_it_changes_tunelab_s() {
    let dir = scratch("gguf-lora");
    let model = Model::load(model_path()).unwrap();
    let base_f32 = dir.join("smollm2-f32.gguf");
    f32_copy(&model_path(), &base_f32);

    let set = common::random_adapter(&model.transformer, LoraConfig { use_rslora: true, ..LoraConfig::default() }, 5, 0.05);
    let adapter = dir.join("adapter");
    set.save(&adapter).unwrap();
    let gguf = dir.join("adapter.gguf");
    let out =
        tunelab(&["export", "gguf-lora", "--adapter", adapter.to_str().unwrap(), "--model", model_path().to_str().unwrap(), "--out", gguf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let prompt = model.template.render_prompt(None, "What is the capital of France?").unwrap();
    let ids = model.tokenizer.encode_with_bos(&prompt).unwrap();
    let ids_json = dir.join("ids.json");
    std::fs::write(&ids_json, serde_json::to_string(&ids).unwrap()).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let last = |t: &tunelab::Transformer| t.forward(&input).unwrap().squeeze(0).unwrap().get(ids.len() - 1).unwrap().to_vec1::<f32>().unwrap();
    let (ours_base, ours_adapted) = (last(&model.transformer), last(&set.merged(&model.transformer).unwrap()));
    let (theirs_base, theirs_adapted) = (llamacpp_logits(&base_f32, None, &ids_json), llamacpp_logits(&base_f32, Some(&gguf), &ids_json));

    let base_apart = max_abs_diff(&ours_base, &theirs_base);
    let effect: Vec<f32> = ours_adapted.iter().zip(&ours_base).map(|(a, b)| a - b).collect();
    let size = effect.iter().fold(0f32, |m, v| m.max(v.abs()));
    let apart = max_abs_diff(&ours_adapted, &theirs_adapted);
    eprintln!("base logits apart {base_apart:.2e}; the adapter moves a logit by up to {size:.3}; adapted logits apart {apart:.2e}");
    assert!(base_apart < 1e-3, "llama.cpp's f32 base differs from tunelab's by {base_apart}");
    assert!(size > 1.0, "the adapter barely changes the logits ({size}): the check would prove nothing");
    assert!(apart < 1e-3, "with the exported adapter, llama.cpp's logits differ from tunelab's by {apart} (the adapter moves them by {size})");
}
