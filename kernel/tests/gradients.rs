//! Gradient checks: each differentiable op, and the whole tiny random transformer, against
//! central finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use tunelab::lora::{AdapterSet, LoraConfig, LoraLayer};
use tunelab::model::ops::{self, OpMode};
use tunelab::model::{Architecture, ModelConfig, Transformer, Weights};

const EPS: f64 = 1e-5;
/// Relative tolerance for autograd vs finite differences (f64, central differences).
const TOL: f64 = 1e-5;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values without a global RNG.
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| ((i as f64 + 1.0) * 12.9898 + seed as f64 * 78.233).sin() * 1.3).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Checks d(sum(f(x) * r))/dx from autograd against finite differences at every entry of x.
fn check(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> Tensor) {
    let r = randn(f(x).dims(), 7);
    let loss = |t: &Tensor| (f(t) * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    let var = Var::from_tensor(x).unwrap();
    let out = (f(var.as_tensor()) * &r).unwrap().sum_all().unwrap();
    let grads = out.backward().unwrap();
    let analytic: Vec<f64> = grads.get(var.as_tensor()).expect("gradient reaches the input").flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += EPS;
        let mut minus = base.clone();
        minus[i] -= EPS;
        let plus = Tensor::from_vec(plus, x.dims(), &Device::Cpu).unwrap();
        let minus = Tensor::from_vec(minus, x.dims(), &Device::Cpu).unwrap();
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * EPS);
        let err = (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-3);
        assert!(err < TOL, "{name}: entry {i}: autograd {} vs finite difference {numeric} (rel err {err:.2e})", analytic[i]);
    }
}

#[test]
fn rms_norm_gradient() {
    let w = randn(&[6], 3);
    check("rms_norm", &randn(&[2, 3, 6], 1), |x| ops::rms_norm(x, &w, 1e-5, OpMode::Differentiable).unwrap());
}

#[test]
fn softmax_gradient() {
    check("softmax", &randn(&[2, 3, 5], 2), |x| ops::softmax(x, OpMode::Differentiable).unwrap());
}

#[test]
fn rope_gradient() {
    let tables = ops::RotaryTables::new(8, 16, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(2, 4).unwrap();
    check("rope", &randn(&[1, 2, 4, 8], 3), |x| ops::rope(x, &cos, &sin, OpMode::Differentiable).unwrap());
}

#[test]
fn fused_inference_ops_equal_differentiable_ops() {
    let x = randn(&[2, 3, 4, 8], 4).to_dtype(DType::F32).unwrap();
    let w = randn(&[8], 5).to_dtype(DType::F32).unwrap();
    let tables = ops::RotaryTables::new(8, 16, 10_000.0, DType::F32, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(3, 4).unwrap();
    let max_diff = |a: Tensor, b: Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let pairs = [
        (ops::rms_norm(&x, &w, 1e-5, OpMode::Inference).unwrap(), ops::rms_norm(&x, &w, 1e-5, OpMode::Differentiable).unwrap()),
        (ops::softmax(&x, OpMode::Inference).unwrap(), ops::softmax(&x, OpMode::Differentiable).unwrap()),
        (ops::rope(&x, &cos, &sin, OpMode::Inference).unwrap(), ops::rope(&x, &cos, &sin, OpMode::Differentiable).unwrap()),
    ];
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let d = max_diff(a, b);
        assert!(d < 1e-5, "op {i}: fused and differentiable forms differ by {d}");
    }
}

/// Cross-entropy of next-token prediction through the whole network, differentiated with
/// respect to what training updates (LoRA A and B on every kind of projection) and to the
/// norm weights and Qwen2 biases, which must carry gradients too. Base projection weights
/// are frozen: they must get none.
#[test]
fn whole_transformer_gradient() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let cfg = ModelConfig::tiny(arch);
        let base = Weights::random(&cfg, 11, DType::F64, &Device::Cpu).unwrap();
        let model = Transformer::load(&cfg, &base).unwrap();
        let ids = Tensor::new(&[[1u32, 4, 2, 9, 3, 7]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[4u32, 2, 9, 3, 7, 0], &Device::Cpu).unwrap();
        let ce = |m: &Transformer| {
            let logits = m.forward_train(&ids).unwrap().squeeze(0).unwrap();
            candle_nn::loss::cross_entropy(&logits, &targets).unwrap()
        };

        // B starts at zero in PEFT; make it non-zero so dL/dA is not trivially zero.
        let adapter = AdapterSet::new(&model, LoraConfig::default(), 5).unwrap();
        for (i, layer) in adapter.layers().values().enumerate() {
            layer.b.set(&(randn(layer.b.dims(), 100 + i as u64) * 0.3).unwrap()).unwrap();
        }
        for module in [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.k_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.o_proj",
            "model.layers.0.mlp.gate_proj",
            "model.layers.1.mlp.up_proj",
            "model.layers.0.mlp.down_proj",
        ] {
            for which in ["A", "B"] {
                let layer = &adapter.layers()[module];
                let x0 = if which == "A" { layer.a.as_tensor().clone() } else { layer.b.as_tensor().clone() };
                check(&format!("{arch:?} {module} lora_{which}"), &x0, |w| {
                    let mut layers = adapter.layers().clone();
                    let l = &layers[module];
                    let (a, b) = if which == "A" { (w.clone(), l.b.as_tensor().clone()) } else { (l.a.as_tensor().clone(), w.clone()) };
                    layers.insert(module.to_string(), LoraLayer::from_tensors(&a, &b, l.scale, 0.0).unwrap());
                    ce(&AdapterSet::from_layers(adapter.config.clone(), layers).apply(&model))
                });
            }
        }

        let mut plain = vec!["model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"];
        if arch == Architecture::Qwen2 {
            plain.push("model.layers.0.self_attn.k_proj.bias");
        }
        for name in plain {
            check(&format!("{arch:?} {name}"), &base.tensors()[name].clone(), |w| {
                let mut tensors = base.tensors().clone();
                tensors.insert(name.to_string(), w.clone());
                ce(&adapter.apply(&Transformer::load(&cfg, &Weights::new("<test>", tensors)).unwrap()))
            });
        }

        // Frozen base weights receive no gradient at all.
        let q = Var::from_tensor(&base.tensors()["model.layers.0.self_attn.q_proj.weight"]).unwrap();
        let mut tensors = base.tensors().clone();
        tensors.insert("model.layers.0.self_attn.q_proj.weight".into(), q.as_tensor().clone());
        let m = adapter.apply(&Transformer::load(&cfg, &Weights::new("<test>", tensors)).unwrap());
        let grads = ce(&m).backward().unwrap();
        assert!(grads.get(q.as_tensor()).is_none(), "frozen base weight got a gradient");
        assert!(adapter.vars().iter().all(|v| grads.get(v.as_tensor()).is_some()), "a LoRA variable got no gradient");
    }
}

#[test]
fn kv_cache_and_padding_reproduce_the_full_forward() {
    let cfg = ModelConfig::tiny(Architecture::Llama);
    let w = Weights::random(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
    let model = Transformer::load(&cfg, &w).unwrap();
    let seq = [1u32, 4, 2, 9, 3, 7, 5];
    let full = model.forward(&Tensor::new(&[seq], &Device::Cpu).unwrap()).unwrap().squeeze(0).unwrap();

    // Prompt of 4, then one token at a time.
    let mut cache = model.new_cache(4);
    let none = tunelab::model::Padding::default();
    let mut steps = vec![model.forward_step(&Tensor::new(&seq[..4], &Device::Cpu).unwrap().unsqueeze(0).unwrap(), &mut cache, &none).unwrap()];
    for &id in &seq[4..] {
        steps.push(model.forward_step(&Tensor::new(&[[id]], &Device::Cpu).unwrap(), &mut cache, &none).unwrap());
    }
    for (k, step) in steps.iter().enumerate() {
        let want = full.get(3 + k).unwrap();
        let d = (step.squeeze(0).unwrap() - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "cached step {k} differs by {d}");
    }

    // The same sequence left-padded by 3 inside a batch gives the same last logits.
    let padded = Tensor::new(&[[0u32, 0, 0, 1, 4, 2, 9, 3, 7, 5], [6, 1, 4, 2, 9, 3, 7, 5, 8, 2]], &Device::Cpu).unwrap();
    let mut cache = model.new_cache(10);
    let pad = tunelab::model::Padding { left: vec![3, 0] };
    let last = model.forward_step(&padded, &mut cache, &pad).unwrap().get(0).unwrap();
    let d = (last - full.get(6).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "left-padded row differs by {d}");
}

#[test]
fn cross_entropy_gradient() {
    let targets = [3u32, 0, 4];
    check("cross_entropy_rows", &randn(&[3, 5], 9), |x| tunelab::model::grad_ops::cross_entropy_rows(x, &targets).unwrap());
    // Values equal candle's composed cross-entropy.
    let x = randn(&[3, 5], 9);
    let ours = tunelab::model::grad_ops::cross_entropy_rows(&x, &targets).unwrap().mean_all().unwrap().to_scalar::<f64>().unwrap();
    let want = candle_nn::loss::cross_entropy(&x, &Tensor::new(&targets, &Device::Cpu).unwrap()).unwrap().to_scalar::<f64>().unwrap();
    assert!((ours - want).abs() < 1e-12, "{ours} vs {want}");
}

/// The low-memory path (each layer recomputed in the backward pass) gives the same loss and
/// the same gradient for every adapter variable as the default path.
#[test]
fn recomputed_layers_give_the_same_gradients() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let cfg = ModelConfig::tiny(arch);
        let model = Transformer::load(&cfg, &Weights::random(&cfg, 21, DType::F64, &Device::Cpu).unwrap()).unwrap();
        let adapter = AdapterSet::new(&model, LoraConfig::default(), 3).unwrap();
        for (i, layer) in adapter.layers().values().enumerate() {
            layer.b.set(&(randn(layer.b.dims(), 300 + i as u64) * 0.3).unwrap()).unwrap();
        }
        let adapted = adapter.apply(&model);
        let ids = Tensor::new(&[[1u32, 4, 2, 9, 3, 7], [5, 6, 1, 0, 2, 8]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[[-100i64, -100, 2, 9, 3, 7], [-100, 6, 1, 0, -100, 8]], &Device::Cpu).unwrap();
        let (l1, n1, g1) = tunelab::train::causal_lm_loss_and_grads(&adapted, &ids, &labels, false).unwrap();
        let (l2, n2, g2) = tunelab::train::causal_lm_loss_and_grads(&adapted, &ids, &labels, true).unwrap();
        assert_eq!(n1, n2);
        let (l1, l2) = (l1.to_scalar::<f64>().unwrap(), l2.to_scalar::<f64>().unwrap());
        assert!((l1 - l2).abs() < 1e-12, "{arch:?}: loss {l1} vs {l2}");
        for v in adapter.vars() {
            let (a, b) = (g1.get(v.as_tensor()).expect("default gradient"), g2.get(v.as_tensor()).expect("recomputed gradient"));
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
            assert!(d < 1e-12, "{arch:?}: gradients differ by {d}");
        }
    }
}
