//! Adapters cross between tunelab and Python PEFT both ways, on the real SmolLM2: tunelab
//! writes the base as an HF directory and a LoRA adapter; PEFT (`tests/peft/roundtrip.py`,
//! in the Python that scripts/test sets up with PyTorch, transformers and PEFT) loads that
//! adapter with `PeftModel.from_pretrained`, and trains one of its own (rsLoRA on a subset
//! of targets) that tunelab loads. Each side's logits with each adapter must agree.
//!
//! tunelab and PyTorch sum in different orders, so the base logits already differ by up to
//! ~2e-3 (`kernel/tests/oracle_hf.rs`). The adapters' own effect — adapted minus base
//! logits, in each framework — must agree within 1e-4 of its size, and be large enough
//! (over 0.1) that a wrong scale or a dropped projection could not pass.

mod common;

use std::process::Command;

use candle_core::{Device, Tensor};
use common::{model_path, root, scratch};
use tunelab::{AdapterSet, LoraConfig, Model};

/// Full-sequence logits `[T, vocab]` of `model` on `ids`.
fn logits(model: &tunelab::Transformer, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&input).unwrap().squeeze(0).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// Checks that two adapters' effects on the logits agree; returns (largest effect, largest
/// disagreement) for the message.
fn effects_agree(what: &str, ours: (&Tensor, &Tensor), theirs: (&Tensor, &Tensor)) {
    let our_effect = (ours.0 - ours.1).unwrap();
    let their_effect = (theirs.0 - theirs.1).unwrap();
    let size = max_abs(&their_effect);
    let apart = max_abs(&(&our_effect - &their_effect).unwrap());
    eprintln!("{what}: largest effect on a logit {size:.4}, tunelab and PEFT apart by at most {apart:.2e}");
    assert!(size > 0.1, "{what}: the adapter barely changes the logits ({size}); the check would prove nothing");
    assert!(apart <= 1e-4 * size.max(1.0), "{what}: tunelab's and PEFT's effects differ by {apart} (effect {size})");
}

#[test]
fn adapters_cross_between_tunelab_and_peft_with_equal_logits() {
    let python = std::env::var("TUNELAB_PEFT_PYTHON")
        .expect("set TUNELAB_PEFT_PYTHON to a Python with torch, transformers and peft (scripts/test does): this test never skips");
    let dir = scratch("peft-roundtrip");
    let (model, weights) = Model::load_with_weights(model_path()).unwrap();
    // The base as an HF directory named as the model, so PEFT's base_model_name_or_path
    // names it.
    let base_dir = dir.join("SmolLM2-135M-Instruct");
    tunelab::model::write_hf_dir(&base_dir, model.config(), &weights, &model.tokenizer, &model.template, Some(&model.path.display().to_string())).unwrap();

    // tunelab's adapter: every projection, B moved off zero so it changes outputs.
    let set = common::random_adapter(&model.transformer, LoraConfig::default(), 7, 0.05);
    let ours = dir.join("tunelab-adapter");
    set.save(&ours).unwrap();

    let prompt = model.template.render_prompt(None, "List two ways to keep an API key out of a git repository.").unwrap();
    let ids = model.tokenizer.encode_with_bos(&prompt).unwrap();
    let ids_json = dir.join("ids.json");
    std::fs::write(&ids_json, serde_json::to_string(&ids).unwrap()).unwrap();
    let (peft_dir, result) = (dir.join("peft-adapter"), dir.join("logits.safetensors"));
    let out = Command::new(&python)
        .arg(root().join("tests/peft/roundtrip.py"))
        .args([&base_dir, &ours, &peft_dir, &ids_json, &result])
        .output()
        .expect("run the PEFT script");
    assert!(out.status.success(), "PEFT side failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let theirs = candle_core::safetensors::load(&result, &Device::Cpu).unwrap();

    let base = logits(&model.transformer, &ids);
    // 1. tunelab's adapter, applied by PEFT.
    let with_ours = logits(&AdapterSet::load_for(&ours, &model).unwrap().merged(&model.transformer).unwrap(), &ids);
    effects_agree("tunelab's adapter in PEFT", (&with_ours, &base), (&theirs["tunelab_adapter"], &theirs["base"]));
    // 2. PEFT's adapter (rsLoRA, q/v/down only), loaded by tunelab through the base-name check.
    let peft_set = AdapterSet::load_for(&peft_dir, &model).unwrap();
    assert!(peft_set.config.use_rslora, "rsLoRA setting lost");
    let with_theirs = logits(&peft_set.merged(&model.transformer).unwrap(), &ids);
    effects_agree("PEFT's adapter in tunelab", (&with_theirs, &base), (&theirs["peft_trained"], &theirs["base"]));
}
