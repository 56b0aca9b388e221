//! The fused training ops (`tunelab::model::fused`) against the composed candle ops they
//! replace: equal values and equal gradients (f64, autograd through both), plus central
//! finite differences on small shapes. Shapes cross the ops' block and chunk boundaries.

use candle_core::{DType, Device, Tensor, Var};
use tunelab::model::fused;
use tunelab::model::grad_ops;
use tunelab::model::ops::{self, OpMode, RotaryTables};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| ((i as f64 + 1.0) * 12.9898 + seed as f64 * 78.233).sin() * 1.3).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

/// Compares `fused` and `composed` on `inputs`: values, and the gradient of
/// `sum(out ⊙ r)` with respect to every input.
fn compare(name: &str, inputs: &[Tensor], fused: impl Fn(&[Tensor]) -> Tensor, composed: impl Fn(&[Tensor]) -> Tensor, tol: f64) {
    let run = |f: &dyn Fn(&[Tensor]) -> Tensor| {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let r = randn(out.dims(), 5);
        let grads = (&out * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<Tensor> = vars.iter().map(|v| grads.get(v.as_tensor()).expect("gradient reaches every input").clone()).collect();
        (out, g)
    };
    let (yf, gf) = run(&fused);
    let (yc, gc) = run(&composed);
    assert_eq!(yf.dims(), yc.dims(), "{name}: output shapes");
    let d = max_diff(&yf, &yc);
    assert!(d < tol, "{name}: outputs differ by {d}");
    for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
        let d = max_diff(a, b);
        assert!(d < tol, "{name}: gradient of input {i} differs by {d}");
    }
}

/// Central finite differences of `sum(f(x) ⊙ r)` at every entry of input `which`.
fn finite_differences(name: &str, inputs: &[Tensor], which: usize, f: impl Fn(&[Tensor]) -> Tensor) {
    let eps = 1e-5;
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts);
    let r = randn(out.dims(), 7);
    let analytic: Vec<f64> =
        (&out * &r).unwrap().sum_all().unwrap().backward().unwrap().get(vars[which].as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = inputs[which].flatten_all().unwrap().to_vec1().unwrap();
    let loss = |x: Vec<f64>| {
        let mut ts = inputs.to_vec();
        ts[which] = Tensor::from_vec(x, inputs[which].dims(), &Device::Cpu).unwrap();
        (f(&ts) * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    for i in 0..base.len() {
        let (mut plus, mut minus) = (base.clone(), base.clone());
        plus[i] += eps;
        minus[i] -= eps;
        let numeric = (loss(plus) - loss(minus)) / (2.0 * eps);
        let err = (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-3);
        assert!(err < 1e-5, "{name}: input {which} entry {i}: autograd {} vs finite difference {numeric}", analytic[i]);
    }
}

#[test]
fn lora_linear_equals_base_plus_low_rank_update() {
    let w = randn(&[12, 10], 1);
    let inputs = [randn(&[2, 5, 10], 2), randn(&[3, 10], 3), randn(&[12, 3], 4)];
    let fused_op = |t: &[Tensor]| fused::lora_linear(&t[0], &w, &t[1], &t[2], 0.7).unwrap();
    let composed = |t: &[Tensor]| {
        let base = t[0].broadcast_matmul(&w.t().unwrap()).unwrap();
        let update = t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap().broadcast_matmul(&t[2].t().unwrap()).unwrap();
        (base + (update * 0.7).unwrap()).unwrap()
    };
    compare("lora_linear", &inputs, fused_op, composed, 1e-10);
    for which in 0..3 {
        finite_differences("lora_linear", &inputs, which, fused_op);
    }
    // The frozen weight never gets a gradient.
    let wv = Var::from_tensor(&w).unwrap();
    let y = fused::lora_linear(&inputs[0], wv.as_tensor(), &inputs[1], &inputs[2], 0.7).unwrap();
    assert!(y.sum_all().unwrap().backward().unwrap().get(wv.as_tensor()).is_none());
}

/// Rotary embedding, grouped-query causal attention, composed from candle ops.
fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, kv: usize, cos: &Tensor, sin: &Tensor) -> Tensor {
    let (b, t, w) = q.dims3().unwrap();
    let d = w / heads;
    let split = |x: &Tensor, h: usize| x.reshape((b, t, h, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    let q = ops::rope(&split(q, heads), cos, sin, OpMode::Differentiable).unwrap();
    let k = ops::rope(&split(k, kv), cos, sin, OpMode::Differentiable).unwrap();
    let v = split(v, kv);
    let rep = heads / kv;
    let repeat = |x: Tensor| Tensor::cat(&vec![&x; rep], 2).unwrap().reshape((b, heads, t, d)).unwrap();
    let (k, v) = (repeat(k), repeat(v));
    let mask: Vec<f64> = (0..t).flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f64::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap().broadcast_add(&mask).unwrap();
    let probs = grad_ops::softmax(&scores).unwrap();
    probs.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, t, heads * d)).unwrap()
}

#[test]
fn causal_attention_equals_composed_attention_across_blocks() {
    // 70 positions cross the op's 64-row block; 4 query heads share 2 key/value heads.
    let (b, t, heads, kv, d) = (2, 70, 4, 2, 8);
    let tables = RotaryTables::new(d, 128, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(0, t).unwrap();
    let inputs = [randn(&[b, t, heads * d], 1), randn(&[b, t, kv * d], 2), randn(&[b, t, kv * d], 3)];
    compare(
        "causal_attention",
        &inputs,
        |x| fused::causal_attention(&x[0], &x[1], &x[2], heads, kv, &cos, &sin).unwrap(),
        |x| composed_attention(&x[0], &x[1], &x[2], heads, kv, &cos, &sin),
        1e-10,
    );
}

#[test]
fn causal_attention_gradient_matches_finite_differences() {
    let (b, t, heads, kv, d) = (1, 5, 2, 1, 4);
    let tables = RotaryTables::new(d, 16, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(0, t).unwrap();
    let inputs = [randn(&[b, t, heads * d], 4), randn(&[b, t, kv * d], 5), randn(&[b, t, kv * d], 6)];
    for which in 0..3 {
        finite_differences("causal_attention", &inputs, which, |x| fused::causal_attention(&x[0], &x[1], &x[2], heads, kv, &cos, &sin).unwrap());
    }
}

#[test]
fn swiglu_equals_silu_times_up() {
    let inputs = [randn(&[3, 5000], 1), randn(&[3, 5000], 2)];
    compare("swiglu", &inputs, |x| fused::swiglu(&x[0], &x[1]).unwrap(), |x| (x[0].silu().unwrap() * &x[1]).unwrap(), 1e-12);
    let small = [randn(&[2, 3], 3), randn(&[2, 3], 4)];
    for which in 0..2 {
        finite_differences("swiglu", &small, which, |x| fused::swiglu(&x[0], &x[1]).unwrap());
    }
}

#[test]
fn lm_head_cross_entropy_equals_logits_then_cross_entropy() {
    // 300 rows cross the op's 128-row chunks.
    let (n, h, vocab) = (300, 6, 17);
    let w = randn(&[vocab, h], 8);
    let targets: Vec<u32> = (0..n).map(|i| (i * 7 % vocab) as u32).collect();
    let inputs = [randn(&[n, h], 9)];
    compare(
        "lm_head_cross_entropy",
        &inputs,
        |x| fused::lm_head_cross_entropy(&x[0], &w, &targets).unwrap(),
        |x| grad_ops::cross_entropy_rows(&x[0].matmul(&w.t().unwrap()).unwrap(), &targets).unwrap(),
        1e-10,
    );
    let small = [randn(&[3, h], 10)];
    finite_differences("lm_head_cross_entropy", &small, 0, |x| fused::lm_head_cross_entropy(&x[0], &w, &targets[..3]).unwrap());
    // Large logits stay finite (no log of an underflowed probability).
    let big = (randn(&[2, h], 11) * 1e3).unwrap();
    let loss: Vec<f64> = fused::lm_head_cross_entropy(&big, &w, &[0, 1]).unwrap().to_vec1().unwrap();
    assert!(loss.iter().all(|l| l.is_finite()), "{loss:?}");
}

/// `x·Wᵀ + s·(x·Aᵀ)·Bᵀ + bias` composed from candle ops.
fn composed_part(x: &Tensor, w: &Tensor, lora: Option<(&Tensor, &Tensor, f64)>, bias: Option<&Tensor>) -> Tensor {
    let mut y = x.broadcast_matmul(&w.t().unwrap()).unwrap();
    if let Some((a, b, s)) = lora {
        y = (y + (x.broadcast_matmul(&a.t().unwrap()).unwrap().broadcast_matmul(&b.t().unwrap()).unwrap() * s).unwrap()).unwrap();
    }
    match bias {
        Some(b) => y.broadcast_add(b).unwrap(),
        None => y,
    }
}

#[test]
fn projection_with_norm_equals_norm_then_side_by_side_projections() {
    // Three parts as a q/k/v projection: two with LoRA (different ranks), one without;
    // biases on two. Inputs: x, then A and B of parts 0 and 2.
    let (wq, wk, wv) = (randn(&[6, 5], 1), randn(&[3, 5], 2), randn(&[3, 5], 3));
    let (norm, bias_q, bias_v) = (randn(&[5], 4), randn(&[6], 5), randn(&[3], 6));
    let inputs = [randn(&[2, 4, 5], 7), randn(&[2, 5], 8), randn(&[6, 2], 9), randn(&[3, 5], 10), randn(&[3, 3], 11)];
    let fused_op = |t: &[Tensor]| {
        let parts = [
            fused::Part { weight: &wq, bias: Some(&bias_q), lora: Some(fused::PartLora { a: &t[1], b: &t[2], scale: 0.7 }) },
            fused::Part { weight: &wk, bias: None, lora: None },
            fused::Part { weight: &wv, bias: Some(&bias_v), lora: Some(fused::PartLora { a: &t[3], b: &t[4], scale: 1.3 }) },
        ];
        fused::project(&t[0], fused::Input::RmsNorm { weight: &norm, eps: 1e-5 }, &parts, None).unwrap()
    };
    let composed = |t: &[Tensor]| {
        let z = grad_ops::rms_norm(&t[0], &norm, 1e-5).unwrap();
        let q = composed_part(&z, &wq, Some((&t[1], &t[2], 0.7)), Some(&bias_q));
        let k = composed_part(&z, &wk, None, None);
        let v = composed_part(&z, &wv, Some((&t[3], &t[4], 1.3)), Some(&bias_v));
        Tensor::cat(&[q, k, v], 2).unwrap()
    };
    compare("project (norm, three parts)", &inputs, fused_op, composed, 1e-10);
    for which in 0..inputs.len() {
        finite_differences("project (norm, three parts)", &inputs, which, fused_op);
    }
}

#[test]
fn projection_of_swiglu_with_residual_equals_composed_ops() {
    // Inputs: [gate | up] rows, A, B, residual. Plus the plain residual case without LoRA.
    let w = randn(&[4, 7], 1);
    let inputs = [randn(&[3, 14], 2), randn(&[2, 7], 3), randn(&[4, 2], 4), randn(&[3, 4], 5)];
    let fused_op = |t: &[Tensor]| {
        let parts = [fused::Part { weight: &w, bias: None, lora: Some(fused::PartLora { a: &t[1], b: &t[2], scale: 0.5 }) }];
        fused::project(&t[0], fused::Input::SwiGlu, &parts, Some(&t[3])).unwrap()
    };
    let composed = |t: &[Tensor]| {
        let z = (t[0].narrow(1, 0, 7).unwrap().silu().unwrap() * t[0].narrow(1, 7, 7).unwrap()).unwrap();
        (&t[3] + composed_part(&z, &w, Some((&t[1], &t[2], 0.5)), None)).unwrap()
    };
    compare("project (swiglu, residual)", &inputs, fused_op, composed, 1e-10);
    for which in 0..inputs.len() {
        finite_differences("project (swiglu, residual)", &inputs, which, fused_op);
    }
    let plain = [randn(&[3, 7], 6), randn(&[3, 4], 7)];
    let frozen_only = |t: &[Tensor]| fused::project(&t[0], fused::Input::Plain, &[fused::Part { weight: &w, bias: None, lora: None }], Some(&t[1])).unwrap();
    compare("project (plain, residual)", &plain, frozen_only, |t| (&t[1] + composed_part(&t[0], &w, None, None)).unwrap(), 1e-10);
    // Without parts the output is empty and the input's gradient zero.
    let x = Var::from_tensor(&plain[0]).unwrap();
    let y = fused::project(x.as_tensor(), fused::Input::Plain, &[], None).unwrap();
    assert_eq!(y.dims(), [3, 0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(max_diff(g.get(x.as_tensor()).expect("a gradient for the input"), &plain[0].zeros_like().unwrap()), 0.0);
    // Shapes that do not fit are errors, not panics.
    assert!(fused::project(&plain[0], fused::Input::SwiGlu, &[fused::Part { weight: &w, bias: None, lora: None }], None).is_err());
    assert!(fused::project(&plain[0], fused::Input::Plain, &[fused::Part { weight: &w, bias: None, lora: None }], Some(&plain[0])).is_err());
}

/// A decoder layer's weights for [`fused::decoder_layer`] tests: hidden 8, 2 query heads
/// sharing 1 key/value head of size 4, MLP width 6, biases on q/k/v.
struct TinyLayer {
    norms: [Tensor; 2],
    /// q, k, v, o, gate, up, down.
    weights: [Tensor; 7],
    biases: [Tensor; 3],
}

impl TinyLayer {
    const SHAPES: [[usize; 2]; 7] = [[8, 8], [4, 8], [4, 8], [8, 8], [6, 8], [6, 8], [8, 6]];

    fn new() -> Self {
        Self {
            norms: [randn(&[8], 20), randn(&[8], 21)],
            weights: Self::SHAPES.map(|s| (randn(&s, s[0] as u64 * 31 + s[1] as u64) * 0.4).unwrap()),
            biases: [randn(&[8], 22), randn(&[4], 23), randn(&[4], 24)],
        }
    }

    /// The projections, with LoRA on q (rank 2), v (rank 3), gate (rank 2) and down (rank 2)
    /// read from `t[1..9]` as A, B pairs.
    fn parts<'a>(&'a self, t: &'a [Tensor]) -> [fused::Part<'a>; 7] {
        let lora = |i: usize, scale: f64| Some(fused::PartLora { a: &t[i], b: &t[i + 1], scale });
        let w = &self.weights;
        [
            fused::Part { weight: &w[0], bias: Some(&self.biases[0]), lora: lora(1, 0.7) },
            fused::Part { weight: &w[1], bias: Some(&self.biases[1]), lora: None },
            fused::Part { weight: &w[2], bias: Some(&self.biases[2]), lora: lora(3, 1.3) },
            fused::Part { weight: &w[3], bias: None, lora: None },
            fused::Part { weight: &w[4], bias: None, lora: lora(5, 0.5) },
            fused::Part { weight: &w[5], bias: None, lora: None },
            fused::Part { weight: &w[6], bias: None, lora: lora(7, 2.0) },
        ]
    }

    fn inputs(b: usize, t: usize) -> Vec<Tensor> {
        let shapes: [&[usize]; 9] = [&[b, t, 8], &[2, 8], &[8, 2], &[3, 8], &[4, 3], &[2, 8], &[6, 2], &[2, 6], &[8, 2]];
        shapes.iter().enumerate().map(|(i, s)| (randn(s, 40 + i as u64) * 0.5).unwrap()).collect()
    }

    fn fused(&self, t: &[Tensor], cos: &Tensor, sin: &Tensor) -> Tensor {
        self.layer(&t[0], self.parts(t), cos, sin)
    }

    /// [`fused::decoder_layer`] of `x` with these projections.
    fn layer(&self, x: &Tensor, parts: [fused::Part<'_>; 7], cos: &Tensor, sin: &Tensor) -> Tensor {
        let [q, k, v, o, gate, up, down] = parts;
        let spec = fused::LayerSpec {
            input_norm: &self.norms[0],
            qkv: [q, k, v],
            o,
            post_norm: &self.norms[1],
            gate_up: [gate, up],
            down,
            heads: 2,
            kv_heads: 1,
            eps: 1e-5,
            cos,
            sin,
        };
        fused::decoder_layer(x, &spec).unwrap()
    }

    /// The same layer as the chain of fused ops it replaces.
    fn chained(&self, t: &[Tensor], cos: &Tensor, sin: &Tensor) -> Tensor {
        let [q, k, v, o, gate, up, down] = self.parts(t);
        let x = &t[0];
        let qkv = fused::project(x, fused::Input::RmsNorm { weight: &self.norms[0], eps: 1e-5 }, &[q, k, v], None).unwrap();
        let attended = fused::causal_attention_joined(&qkv, 2, 1, cos, sin).unwrap();
        let h = fused::project(&attended, fused::Input::Plain, &[o], Some(x)).unwrap();
        let gate_up = fused::project(&h, fused::Input::RmsNorm { weight: &self.norms[1], eps: 1e-5 }, &[gate, up], None).unwrap();
        fused::project(&gate_up, fused::Input::SwiGlu, &[down], Some(&h)).unwrap()
    }
}

#[test]
fn decoder_layer_equals_the_chain_of_fused_ops_it_replaces() {
    // 70 positions cross attention's 64-row block.
    let (b, t) = (2, 70);
    let tables = RotaryTables::new(4, 128, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(0, t).unwrap();
    let layer = TinyLayer::new();
    let inputs = TinyLayer::inputs(b, t);
    compare("decoder_layer", &inputs, |x| layer.fused(x, &cos, &sin), |x| layer.chained(x, &cos, &sin), 1e-10);
    // The same in f32, as training runs it.
    let f32s: Vec<Tensor> = inputs.iter().map(|x| x.to_dtype(DType::F32).unwrap()).collect();
    let (cos32, sin32) = (cos.to_dtype(DType::F32).unwrap(), sin.to_dtype(DType::F32).unwrap());
    let layer32 = TinyLayer {
        norms: layer.norms.clone().map(|x| x.to_dtype(DType::F32).unwrap()),
        weights: layer.weights.clone().map(|x| x.to_dtype(DType::F32).unwrap()),
        biases: layer.biases.clone().map(|x| x.to_dtype(DType::F32).unwrap()),
    };
    let (yf, yc) = (layer32.fused(&f32s, &cos32, &sin32), layer32.chained(&f32s, &cos32, &sin32));
    let d = max_diff(&yf.to_dtype(DType::F64).unwrap(), &yc.to_dtype(DType::F64).unwrap());
    assert!(d < 1e-5, "decoder_layer in f32 differs by {d}");
}

#[test]
fn decoder_layer_gradient_matches_finite_differences() {
    let t = 3;
    let tables = RotaryTables::new(4, 16, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(0, t).unwrap();
    let layer = TinyLayer::new();
    let inputs = TinyLayer::inputs(1, t);
    for which in [0, 1, 4, 8] {
        finite_differences("decoder_layer", &inputs, which, |x| layer.fused(x, &cos, &sin));
    }
}

#[test]
fn decoder_layer_without_lora_passes_the_input_gradient() {
    let t = 4;
    let tables = RotaryTables::new(4, 16, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    let (cos, sin) = tables.range(0, t).unwrap();
    let layer = TinyLayer::new();
    let frozen = |x: &[Tensor]| {
        let parts = std::array::from_fn(|i| fused::Part { weight: &layer.weights[i], bias: None, lora: None });
        layer.layer(&x[0], parts, &cos, &sin)
    };
    finite_differences("decoder_layer (no LoRA)", &[randn(&[1, t, 8], 50)], 0, frozen);
}
