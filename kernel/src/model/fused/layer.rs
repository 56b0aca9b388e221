//! A whole decoder layer's training pass as one op: norm + q/k/v, attention, o + residual,
//! norm + gate/up, SwiGLU + down + residual.
//!
//! Why: candle's backward pass sums every tensor's gradient into a fresh zero tensor
//! (`zeros_like`, then `add`), on the calling thread for the zeroing. With the layer as
//! five graph ops, that meant zeroing and adding 5 760 values per token per layer (the
//! q/k/v rows, the attention output, the residual stream twice, the gate/up rows) on top
//! of the work itself: 9 % of a training step. Here the intermediate rows are the op's own
//! working state: the forward pass keeps them inside the op (the same values the graph
//! kept before, so the same memory) and the backward pass hands each gradient to the next
//! step directly; candle sees only the layer's input and its LoRA weights.
//!
//! Each step is the op it replaces ([`super::project`], [`super::causal_attention_joined`]),
//! so the values are the same; `tests/fused_ops.rs` compares the layer with those ops,
//! gradients included.

use std::any::Any;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::CausalAttention;
use super::projection::{lora_pack, Project};
use super::{slice_grads, slice_of, Float, Input, Part, SliceBackward};

/// The pieces of one decoder layer, as [`decoder_layer`] reads them.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec<'a> {
    /// RMSNorm weight before attention `[hidden]`.
    pub input_norm: &'a Tensor,
    /// The q, k and v projections.
    pub qkv: [Part<'a>; 3],
    /// The attention output projection.
    pub o: Part<'a>,
    /// RMSNorm weight before the MLP `[hidden]`.
    pub post_norm: &'a Tensor,
    /// The MLP's gate and up projections.
    pub gate_up: [Part<'a>; 2],
    /// The MLP's down projection.
    pub down: Part<'a>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// The norms' epsilon.
    pub eps: f64,
    /// Rotary tables `[t, head_dim / 2]`.
    pub cos: &'a Tensor,
    /// Rotary tables `[t, head_dim / 2]`.
    pub sin: &'a Tensor,
}

/// The layer's output `[b, t, hidden]` for its input `x` `[b, t, hidden]`. Gradients flow to
/// `x` and every LoRA `A` and `B`; weights, biases and norms are frozen.
pub fn decoder_layer(x: &Tensor, spec: &LayerSpec<'_>) -> candle_core::Result<Tensor> {
    let (b, t, hidden) = x.dims3()?;
    let op = DecoderLayer::new(b, t, hidden, spec)?;
    let x2 = x.contiguous()?.reshape((b * t, hidden))?;
    let parts = [spec.qkv[0], spec.qkv[1], spec.qkv[2], spec.o, spec.gate_up[0], spec.gate_up[1], spec.down];
    let y = match lora_pack(&parts)? {
        Some(pack) => x2.apply_op2(&pack, op)?,
        None => x2.apply_op1(op)?,
    };
    y.reshape((b, t, hidden))
}

/// The four projection steps and the attention between them.
struct DecoderLayer {
    qkv: Project,
    attention: CausalAttention,
    o: Project,
    gate_up: Project,
    down: Project,
    hidden: usize,
    /// Where each projection step's LoRA weights sit in the joined argument.
    segments: [std::ops::Range<usize>; 4],
    /// The forward pass's intermediate rows ([`Saved`] of the element type), taken by the
    /// backward pass.
    saved: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Intermediate rows the backward pass reads: q/k/v `[m, qkv]`, attention output
/// `[m, heads·d]`, the residual stream after attention `[m, hidden]`, gate/up `[m, 2·inter]`.
struct Saved<T> {
    qkv: Vec<T>,
    attended: Vec<T>,
    h: Vec<T>,
    gate_up: Vec<T>,
}

impl DecoderLayer {
    fn new(b: usize, t: usize, hidden: usize, spec: &LayerSpec<'_>) -> candle_core::Result<Self> {
        let qkv = Project::new(Input::RmsNorm { weight: spec.input_norm, eps: spec.eps }, &spec.qkv, hidden, false)?;
        let attention = CausalAttention::new(b, t, qkv.width(), spec.heads, spec.kv_heads, spec.cos, spec.sin)?;
        let o = Project::new(Input::Plain, &[spec.o], attention.out_width(), true)?;
        let gate_up = Project::new(Input::RmsNorm { weight: spec.post_norm, eps: spec.eps }, &spec.gate_up, hidden, false)?;
        if gate_up.width() % 2 != 0 {
            candle_core::bail!("decoder_layer: gate/up width {} is odd", gate_up.width());
        }
        let down = Project::new(Input::SwiGlu, &[spec.down], gate_up.width() / 2, true)?;
        if o.width() != hidden || down.width() != hidden {
            candle_core::bail!("decoder_layer: o ({}) and down ({}) must write the hidden width {hidden}", o.width(), down.width());
        }
        let mut start = 0;
        let segments = [&qkv, &o, &gate_up, &down].map(|p| {
            let range = start..start + p.pack_len();
            start = range.end;
            range
        });
        Ok(Self { qkv, attention, o, gate_up, down, hidden, segments, saved: Mutex::new(None) })
    }

    /// Step `i`'s LoRA weights.
    fn segment<'p, T>(&self, pack: Option<&'p [T]>, i: usize) -> Option<&'p [T]> {
        pack.map(|p| &p[self.segments[i].clone()])
    }

    fn forward<T: Float>(&self, x: &[T], pack: Option<&[T]>, m: usize) -> candle_core::Result<Vec<T>> {
        let qkv = self.qkv.forward(x, self.segment(pack, 0), None, m)?;
        let attended = self.attention.forward(&qkv);
        let h = self.o.forward(&attended, self.segment(pack, 1), Some(x), m)?;
        let gate_up = self.gate_up.forward(&h, self.segment(pack, 2), None, m)?;
        let y = self.down.forward(&gate_up, self.segment(pack, 3), Some(&h), m)?;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(Saved { qkv, attended, h, gate_up }));
        Ok(y)
    }

    fn cpu_forward(&self, x: (&CpuStorage, &Layout), pack: Option<(&CpuStorage, &Layout)>) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = x.1.dims().first().copied().unwrap_or(0);
        fn run<T: Float>(op: &DecoderLayer, x: (&CpuStorage, &Layout), pack: Option<(&CpuStorage, &Layout)>, m: usize) -> candle_core::Result<Vec<T>> {
            let pack = pack.map(|(s, l)| slice_of::<T>(s, l)).transpose()?;
            op.forward(slice_of::<T>(x.0, x.1)?, pack, m)
        }
        let y = match x.0 {
            CpuStorage::F32(_) => CpuStorage::F32(run::<f32>(self, x, pack, m)?),
            CpuStorage::F64(_) => CpuStorage::F64(run::<f64>(self, x, pack, m)?),
            _ => candle_core::bail!("decoder_layer supports f32 and f64"),
        };
        Ok((y, Shape::from((m, self.hidden))))
    }
}

impl SliceBackward for DecoderLayer {
    const NAME: &'static str = "decoder_layer";

    /// `(dx, d(joined LoRA weights))` for upstream `dy` `[m, hidden]`.
    fn backward<T: Float>(&self, x: &[T], pack: Option<&[T]>, dy: &[T], m: usize) -> candle_core::Result<(Vec<T>, Option<Vec<T>>)> {
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(Ok(s)) = saved.map(|s| s.downcast::<Saved<T>>()) else {
            candle_core::bail!("decoder_layer: backward without its forward pass (or run twice)");
        };
        let (dgate_up, d_down) = self.down.backward(&s.gate_up, self.segment(pack, 3), dy, m)?;
        let (mut dh, d_gate_up) = self.gate_up.backward(&s.h, self.segment(pack, 2), &dgate_up, m)?;
        drop(dgate_up);
        add_into(&mut dh, dy);
        let (dattended, d_o) = self.o.backward(&s.attended, self.segment(pack, 1), &dh, m)?;
        let dqkv = self.attention.backward(&s.qkv, &s.attended, &dattended);
        drop(dattended);
        let (mut dx, d_qkv) = self.qkv.backward(x, self.segment(pack, 0), &dqkv, m)?;
        add_into(&mut dx, &dh);
        let dpack = pack.map(|_| [d_qkv, d_o, d_gate_up, d_down].into_iter().flatten().flatten().collect());
        Ok((dx, dpack))
    }
}

/// `acc += other`, in parallel chunks.
fn add_into<T: Float>(acc: &mut [T], other: &[T]) {
    acc.par_chunks_mut(1 << 14).zip(other.par_chunks(1 << 14)).for_each(|(a, o)| {
        for (a, &o) in a.iter_mut().zip(o) {
            *a += o;
        }
    });
}

impl CustomOp1 for DecoderLayer {
    fn name(&self) -> &'static str {
        "decoder-layer"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((s, l), None)
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(slice_grads(self, x, None, dy)?.0))
    }
}

impl CustomOp2 for DecoderLayer {
    fn name(&self) -> &'static str {
        "decoder-layer"
    }

    /// The second argument is the joined LoRA weights of the layer's seven projections.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((s1, l1), Some((s2, l2)))
    }

    fn bwd(&self, x: &Tensor, pack: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dpack) = slice_grads(self, x, Some(pack), dy)?;
        Ok((Some(dx), dpack))
    }
}
