//! The device-generic path a GPU runs (`--device cuda`), checked on the CPU against this
//! crate's CPU kernels with `set_portable_ops`: the same training loss and gradients, the
//! same greedy tokens, and bf16 base weights close to f32. The real SmolLM2 model.

mod common;

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use tunelab::data::Batch;
use tunelab::lora::LoraConfig;
use tunelab::model::portable::set_portable_ops;
use tunelab::prelude::*;
use tunelab::train::{causal_lm_loss_and_grads, step, AdamW, StepOptions};
use tunelab::Transformer;

/// The portable switch is process-wide: tests that flip it take turns.
static SWITCH: Mutex<()> = Mutex::new(());

/// Runs `f` with the device-generic ops on (`portable`) or off, then turns them off.
fn with_ops<T>(portable: bool, f: impl FnOnce() -> T) -> T {
    let _turn = SWITCH.lock().unwrap_or_else(|p| p.into_inner());
    set_portable_ops(portable);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    set_portable_ops(false);
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Two rows of 40 pseudo-random tokens, the first 8 positions unlabelled.
fn batch() -> Batch {
    let ids: Vec<u32> = (0..80u32).map(|i| (i * 7919 + 13) % 49152).collect();
    let labels: Vec<i64> = ids.iter().enumerate().map(|(i, &t)| if i % 40 < 8 { -100 } else { i64::from(t) }).collect();
    Batch {
        input_ids: Tensor::from_vec(ids, (2, 40), &Device::Cpu).unwrap(),
        labels: Tensor::from_vec(labels, (2, 40), &Device::Cpu).unwrap(),
        tokens: 80,
        label_tokens: 64,
    }
}

/// An adapter moved off its zero start by one AdamW step (so A and B both get gradients),
/// and the base with it attached.
fn trained_adapter(base: &Transformer) -> (AdapterSet, Transformer) {
    let adapter = AdapterSet::new(base, LoraConfig::default(), 7).unwrap();
    let adapted = adapter.apply(base);
    let mut opt = AdamW::new(adapter.vars(), 0.9, 0.999, 1e-8, 0.0).unwrap();
    with_ops(false, || step(&adapted, &mut opt, &[batch()], StepOptions { lr: 1e-2, max_grad_norm: 0.0, low_memory: false }).unwrap());
    (adapter, adapted)
}

/// The loss and every adapter gradient, flattened in the adapter's variable order.
fn loss_and_grads(model: &Transformer, adapter: &AdapterSet, recompute: bool) -> (f64, Vec<f32>) {
    let b = batch();
    let (loss, _, grads) = causal_lm_loss_and_grads(model, &b.input_ids, &b.labels, recompute).unwrap();
    let flat = adapter
        .vars()
        .iter()
        .flat_map(|v| grads.get(v.as_tensor()).expect("every adapter variable gets a gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    (loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), flat)
}

/// Largest difference relative to the largest magnitude.
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn training_loss_and_gradients_equal_the_cpu_kernels() {
    let model = Model::load(common::smollm_path()).unwrap();
    let base = model.transformer.without_packed_weights();
    let (adapter, adapted) = trained_adapter(&base);
    let (loss, grads) = with_ops(false, || loss_and_grads(&adapted, &adapter, false));
    let (portable_loss, portable_grads) = with_ops(true, || {
        assert!(!adapted.uses_cpu_kernels(), "the switch must route around the fused ops");
        loss_and_grads(&adapted, &adapter, false)
    });
    assert!((loss - portable_loss).abs() < 1e-4 * loss, "loss {loss} with the CPU kernels, {portable_loss} portable");
    let gap = relative_gap(&grads, &portable_grads);
    assert!(gap < 1e-3, "adapter gradients differ by {gap} of their scale");
    assert!(grads.iter().any(|g| *g != 0.0));
    // The low-memory path (layers recomputed in the backward pass) on the portable ops.
    let (recomputed_loss, recomputed) = with_ops(true, || loss_and_grads(&adapted, &adapter, true));
    assert!((recomputed_loss - portable_loss).abs() < 1e-5 * loss);
    assert!(relative_gap(&portable_grads, &recomputed) < 1e-4);
}

#[test]
fn greedy_tokens_equal_the_cpu_kernels() {
    let model = Model::load(common::smollm_path()).unwrap();
    let prompts: Vec<String> = ["What is 2+2?", "Name three primary colors."].iter().map(|p| model.template.render_prompt(None, p).unwrap()).collect();
    let cfg = GenerationConfig::greedy(16);
    let generate = |portable| {
        with_ops(portable, || {
            let gen = Generator::new(&model.transformer, &model.tokenizer);
            assert_eq!(model.transformer.supports_sequence_decoding(), !portable);
            gen.generate_batch(&prompts, &cfg, |_, _| {}).unwrap().into_iter().map(|g| g.token_ids).collect::<Vec<_>>()
        })
    };
    assert_eq!(generate(false), generate(true), "the padded-batch path a GPU runs picks other tokens");
}

#[test]
fn bf16_base_weights_train_close_to_f32() {
    let model = Model::load(common::smollm_path()).unwrap();
    let base = model.transformer.without_packed_weights();
    let (adapter, adapted) = trained_adapter(&base);
    let bf16 = adapter.apply(&base.with_bf16_base_weights().unwrap());
    assert!(bf16.projections().iter().all(|(_, p)| p.weight().dtype() == DType::BF16));
    let (loss, grads) = with_ops(false, || loss_and_grads(&adapted, &adapter, false));
    for portable in [true, false] {
        let (bf16_loss, bf16_grads) = with_ops(portable, || loss_and_grads(&bf16, &adapter, false));
        assert!((bf16_loss - loss).abs() < 0.02 * loss, "portable {portable}: bf16 loss {bf16_loss} vs f32 {loss}");
        assert_ne!(bf16_loss, loss, "portable {portable}: the weights were not rounded");
        let c = cosine(&grads, &bf16_grads);
        assert!(c > 0.98, "portable {portable}: gradient cosine {c}");
    }
    // Training steps on bf16 base weights lower the loss of the batch they see.
    let fresh = AdapterSet::new(&base, LoraConfig::default(), 3).unwrap();
    let on_bf16 = fresh.apply(&base.with_bf16_base_weights().unwrap());
    let mut opt = AdamW::new(fresh.vars(), 0.9, 0.999, 1e-8, 0.0).unwrap();
    let losses: Vec<f64> = with_ops(true, || {
        (0..3).map(|_| step(&on_bf16, &mut opt, &[batch()], StepOptions { lr: 1e-2, max_grad_norm: 1.0, low_memory: false }).unwrap().loss).collect()
    });
    assert!(losses[2] < losses[0], "losses {losses:?}");
}
