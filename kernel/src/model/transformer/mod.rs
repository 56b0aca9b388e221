//! The llama-family decoder (Llama, SmolLM, Qwen2) built from ops that backpropagate.
//!
//! Shapes: token ids `[batch, seq]` → hidden `[batch, seq, hidden]` → logits
//! `[batch, seq, vocab]`. Each layer is pre-norm: `h = x + attn(rms(x))`,
//! `out = h + mlp(rms(h))`, with grouped-query causal attention, HF rotate-half rotary
//! embeddings and a SwiGLU MLP `down(silu(gate(x)) * up(x))`. Weights are plain tensors
//! under their HF names; [`Linear`] (in `model/linear.rs`) is the seam where LoRA attaches.

mod attend;
mod decode;

pub use decode::SequenceCache;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor, D};

use super::config::ModelConfig;
use super::fused;
use super::linear::{Linear, PROJECTIONS};
use super::ops::{self, OpMode, RotaryTables};
use super::weights::Weights;
use crate::error::Result;

/// Per-layer key/value cache for incremental decoding.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
}

impl KvCache {
    /// An empty cache for `cfg`, pre-sized for `capacity` positions (it grows if needed).
    pub fn new(cfg: &ModelConfig, capacity: usize) -> Self {
        let layers = (0..cfg.num_hidden_layers).map(|_| candle_nn::kv_cache::KvCache::new(2, capacity.max(1))).collect();
        Self { layers }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.current_seq_len())
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How rows of a batch are laid out: with left padding, row `b` starts at `pad[b]`.
#[derive(Debug, Clone, Default)]
pub struct Padding {
    /// Number of padding tokens at the left of each row.
    pub left: Vec<usize>,
}

impl Padding {
    fn is_trivial(&self) -> bool {
        self.left.iter().all(|&p| p == 0)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
}

/// What a forward pass needs besides the hidden states: positions, mask, mode.
struct Step {
    cos: Tensor,
    sin: Tensor,
    /// Additive mask broadcastable to `[batch, 1, 1, seq, keys]` (0 or -inf), if needed.
    mask: Option<Tensor>,
    /// The fused attention op applies (no cache, no padding, positions `0..t` in every row,
    /// CPU f32/f64): it applies the causal mask itself, so `mask` is `None`.
    fused_attention: bool,
    mode: OpMode,
    eps: f64,
}

impl Attention {
    fn forward(&self, x: &Tensor, step: &Step, cache: Option<&mut candle_nn::kv_cache::KvCache>) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        if step.fused_attention {
            let q = self.q_proj.forward(x, step.mode)?;
            let k = self.k_proj.forward(x, step.mode)?;
            let v = self.v_proj.forward(x, step.mode)?;
            let out = fused::causal_attention(&q, &k, &v, nh, nkv, &step.cos, &step.sin)?;
            return self.o_proj.forward(&out, step.mode);
        }
        let split = |y: Tensor, heads: usize| y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous();
        let q = split(self.q_proj.forward(x, step.mode)?, nh)?;
        let k = split(self.k_proj.forward(x, step.mode)?, nkv)?;
        let v = split(self.v_proj.forward(x, step.mode)?, nkv)?;
        let q = ops::rope(&q, &step.cos, &step.sin, step.mode)?;
        let k = ops::rope(&k, &step.cos, &step.sin, step.mode)?;
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        let s = k.dim(2)?;
        // Grouped-query attention without copying keys: the n_rep query heads that share a
        // key/value head are stacked along the sequence axis, [b, kv, n_rep * t, hd].
        let n_rep = nh / nkv;
        let q = q.reshape((b, nkv, n_rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = match &step.mask {
            Some(m) => scores.reshape((b, nkv, n_rep, t, s))?.broadcast_add(m)?.reshape((b, nkv, n_rep * t, s))?,
            None => scores,
        };
        let probs = ops::softmax(&scores, step.mode)?;
        let out = probs.matmul(&v.contiguous()?)?; // [b, kv, n_rep * t, hd]
        let out = out.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out, step.mode)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor, mode: OpMode) -> candle_core::Result<Tensor> {
        let [gate, up] = Linear::forward_joined([&self.gate_proj, &self.up_proj], x, mode)?;
        let hidden = if fused::available(&gate) { fused::swiglu(&gate, &up)? } else { (gate.silu()? * up)? };
        self.down_proj.forward(&hidden, mode)
    }
}

impl DecoderLayer {
    fn load(w: &Weights, i: usize, cfg: &ModelConfig) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let h = cfg.hidden_size;
        let projections: Vec<Linear> = PROJECTIONS.iter().map(|proj| Linear::load_projection(w, proj, i, cfg)).collect::<Result<_>>()?;
        // The table's order: q, k, v, o, gate, up, down.
        let [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]: [Linear; PROJECTIONS.len()] =
            projections.try_into().expect("one projection per table entry");
        Ok(Self {
            input_layernorm: w.get(&format!("{p}.input_layernorm.weight"), &[h])?,
            self_attn: Attention {
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                num_heads: cfg.num_attention_heads,
                num_kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim(),
            },
            post_attention_layernorm: w.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            mlp: Mlp { gate_proj, up_proj, down_proj },
        })
    }

    /// The layer's projections in [`PROJECTIONS`] order.
    fn projections(&self) -> [&Linear; PROJECTIONS.len()] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj]
    }

    /// Mutable access to the layer's projections in [`PROJECTIONS`] order.
    fn projections_mut(&mut self) -> [&mut Linear; PROJECTIONS.len()] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj, &mut m.gate_proj, &mut m.up_proj, &mut m.down_proj]
    }

    /// Ids of the LoRA variables this layer's projections carry.
    fn lora_var_ids(&self) -> Vec<candle_core::TensorId> {
        self.projections().into_iter().filter_map(|p| p.lora()).flat_map(|l| [l.a.as_tensor().id(), l.b.as_tensor().id()]).collect()
    }

    fn forward(&self, x: &Tensor, step: &Step, cache: Option<&mut candle_nn::kv_cache::KvCache>) -> candle_core::Result<Tensor> {
        if cache.is_none() && step.fused_attention && step.mode == OpMode::Differentiable {
            if let Some(y) = self.forward_fused(x, step)? {
                return Ok(y);
            }
        }
        let normed = ops::rms_norm(x, &self.input_layernorm, step.eps, step.mode)?;
        let h = (x + self.self_attn.forward(&normed, step, cache)?)?;
        let normed = ops::rms_norm(&h, &self.post_attention_layernorm, step.eps, step.mode)?;
        h + self.mlp.forward(&normed, step.mode)?
    }
}

impl DecoderLayer {
    /// The training pass as one fused op ([`fused::decoder_layer`]: norm + q/k/v, attention,
    /// o + residual, norm + gate/up, SwiGLU + down + residual), which keeps 40 % fewer values
    /// per token for the backward pass than one op per step and leaves candle only the
    /// layer's input and LoRA weights to sum gradients for; `None` when a projection's LoRA dropout
    /// needs the composed path, or a base weight is being differentiated.
    fn forward_fused(&self, x: &Tensor, step: &Step) -> candle_core::Result<Option<Tensor>> {
        let [Some(q), Some(k), Some(v), Some(o), Some(gate), Some(up), Some(down)] = self.projections().map(|p| p.fused_part(true)) else {
            return Ok(None);
        };
        if self.input_layernorm.track_op() || self.post_attention_layernorm.track_op() {
            return Ok(None); // the fused ops treat the norms as frozen
        }
        let spec = fused::LayerSpec {
            input_norm: &self.input_layernorm,
            qkv: [q, k, v],
            o,
            post_norm: &self.post_attention_layernorm,
            gate_up: [gate, up],
            down,
            heads: self.self_attn.num_heads,
            kv_heads: self.self_attn.num_kv_heads,
            eps: step.eps,
            cos: &step.cos,
            sin: &step.sin,
        };
        Ok(Some(fused::decoder_layer(x, &spec)?))
    }
}

/// A llama-family causal language model with f32 weights.
#[derive(Debug, Clone)]
pub struct Transformer {
    cfg: ModelConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Linear,
    rotary: RotaryTables,
    device: Device,
}

impl Transformer {
    /// Builds the model from HF-named weights, checking every tensor's presence and shape.
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = w.get("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..cfg.num_hidden_layers).map(|i| DecoderLayer::load(w, i, cfg)).collect::<Result<Vec<_>>>()?;
        let norm = w.get("model.norm.weight", &[h])?;
        let lm_head = match w.get_opt("lm_head.weight", &[v, h])? {
            Some(head) if !cfg.tie_word_embeddings => Linear::new(head, None).with_packed(w.packed("lm_head.weight")),
            _ if cfg.tie_word_embeddings => Linear::new(embed_tokens.clone(), None).with_packed(w.packed("model.embed_tokens.weight")),
            _ => Linear::new(w.get("lm_head.weight", &[v, h])?, None),
        };
        let device = embed_tokens.device().clone();
        let rotary = RotaryTables::new(cfg.head_dim(), cfg.max_position_embeddings, cfg.rope_theta, embed_tokens.dtype(), &device)?;
        Ok(Self { cfg: cfg.clone(), embed_tokens, layers, norm, lm_head, rotary, device })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Every LoRA-targetable projection with its HF module name
    /// (`model.layers.3.self_attn.q_proj`), in layer order.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * PROJECTIONS.len());
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(PROJECTIONS.iter().zip(l.projections()).map(|(spec, p)| (spec.module(i), p)));
        }
        out
    }

    /// Mutable access to the projections, named as in [`Transformer::projections`].
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * PROJECTIONS.len());
        for (i, l) in self.layers.iter_mut().enumerate() {
            out.extend(PROJECTIONS.iter().zip(l.projections_mut()).map(|(spec, p)| (spec.module(i), p)));
        }
        out
    }

    /// Whether this crate's fused CPU ops run this model (CPU, f32/f64 weights, no
    /// [`crate::model::portable::set_portable_ops`]); else the device-generic compositions.
    pub fn uses_cpu_kernels(&self) -> bool {
        fused::available(&self.embed_tokens) && self.base_weight_dtype() == self.dtype()
    }

    /// How the frozen projection weights are stored (bf16 after
    /// [`Transformer::with_bf16_base_weights`], else the model's dtype).
    pub fn base_weight_dtype(&self) -> DType {
        self.lm_head.weight().dtype()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A copy whose tensors share storage with this one but carry ids from the calling
    /// code's copy of candle.
    ///
    /// Why: evcxr links each notebook cell with its own copy of candle, and candle numbers
    /// tensors with a per-copy counter. A model loaded in one cell and trained in another
    /// would mix tensors numbered by two counters, and backprop (which keys gradients by id)
    /// would add unrelated gradients together. Re-identifying the base tensors where the
    /// graph is built avoids it at no memory cost.
    pub fn with_fresh_ids(&self) -> Result<Self> {
        let fresh = |t: &Tensor| t.broadcast_as(t.shape());
        let mut out = self.clone();
        out.embed_tokens = fresh(&self.embed_tokens)?;
        out.norm = fresh(&self.norm)?;
        out.lm_head = self.lm_head.with_fresh_ids()?;
        out.rotary = self.rotary.with_fresh_ids()?;
        for layer in &mut out.layers {
            layer.input_layernorm = fresh(&layer.input_layernorm)?;
            layer.post_attention_layernorm = fresh(&layer.post_attention_layernorm)?;
            for p in layer.projections_mut() {
                *p = p.with_fresh_ids()?;
            }
        }
        Ok(out)
    }

    /// A copy for generation whose projections and output head also hold `dtype`-quantized
    /// weights (e.g. Q8_0), read by decoding passes (one new token per sequence): each token
    /// then reads about a quarter of the f32 bytes, which makes single-stream decoding about
    /// twice as fast. Prompts still run through the f32 weights; batched decoding of many
    /// sequences is faster on the f32 weights too. Projections with
    /// a LoRA adapter attached keep the f32 path (fold the adapter in first with
    /// `AdapterSet::merged`).
    pub fn quantized_for_decoding(&self, dtype: GgmlDType) -> Result<Self> {
        Ok(self.with_each_linear(|p| p.with_quantized(dtype))?)
    }

    /// A copy for generation whose projections and output head also hold bf16 copies of
    /// their weights, read by prompt and decoding passes (not by training): on CPUs with
    /// AVX-512 BF16 a product runs twice the multiply-adds per instruction, at the price
    /// of bf16 rounding of weights and activations, so greedy tokens can differ from the f32
    /// path's. Projections with a LoRA adapter attached keep the f32 path (fold the adapter
    /// in first with `AdapterSet::merged`). Where this crate's CPU kernels do not run (a
    /// GPU), the weights themselves are stored in bf16, as [`Transformer::with_bf16_base_weights`].
    pub fn bf16_for_decoding(&self) -> Result<Self> {
        Ok(self.with_each_linear(|p| p.with_bf16())?)
    }

    /// A copy for generation whose projections and output head also hold integer-block
    /// copies of their weights (the model file's Q4_1 / Q8_0 blocks, else Q8_0), read by
    /// decoding steps and short prompts with the activations rounded to 8 bits per block of
    /// 32 and multiplied in integers, as llama.cpp does (see `int8_rows`): the fewest
    /// instructions per weight, at the price of that rounding, so greedy tokens can differ
    /// from the f32 path's. Attached LoRA updates stay f32 and are added unrounded.
    pub fn int8_for_decoding(&self) -> Result<Self> {
        Ok(self.with_each_linear(|p| p.with_int8())?)
    }

    /// A copy whose projections and output head store their frozen weights in bf16 (for
    /// training and generation alike; the LoRA update, norms, embeddings and activations stay
    /// f32): half the weight memory, products on the device's bf16 GEMM with f32
    /// accumulation. Meant for GPUs (`--base-dtype bf16`, issue #15); on a CPU it runs
    /// candle's slower bf16 GEMM, where [`Transformer::bf16_for_decoding`] is the fast choice
    /// for generation.
    pub fn with_bf16_base_weights(&self) -> Result<Self> {
        Ok(self.with_each_linear(|p| p.with_weight_dtype(DType::BF16))?)
    }

    /// A copy on `device` (`Device::new_cuda(0)` …): every weight moved, the CPU-only
    /// decoding structures dropped. Models load on the CPU; [`crate::Model::load_on`] moves them.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        if self.device.same_device(device) {
            return Ok(self.clone());
        }
        let mut out = self.clone();
        for (_, p) in out.projections_mut() {
            *p = p.to_device(device)?;
        }
        out.embed_tokens = self.embed_tokens.to_device(device)?;
        out.lm_head = if self.head_shares_embeddings() {
            self.lm_head.to_device_with_weight(device, out.embed_tokens.clone())?
        } else {
            self.lm_head.to_device(device)?
        };
        out.norm = self.norm.to_device(device)?;
        out.rotary = self.rotary.to_device(device)?;
        for layer in &mut out.layers {
            layer.input_layernorm = layer.input_layernorm.to_device(device)?;
            layer.post_attention_layernorm = layer.post_attention_layernorm.to_device(device)?;
        }
        out.device = device.clone();
        Ok(out)
    }

    /// Whether the output head is the embedding table itself (tied embeddings, weight not
    /// converted to another dtype), so that moving the model moves the table once.
    fn head_shares_embeddings(&self) -> bool {
        let head = self.lm_head.weight();
        self.cfg.tie_word_embeddings && self.lm_head.bias().is_none() && head.dtype() == self.embed_tokens.dtype() && head.dims() == self.embed_tokens.dims()
    }

    /// A copy with `f` applied to every projection and the output head.
    fn with_each_linear<E>(&self, f: impl Fn(&Linear) -> std::result::Result<Linear, E>) -> std::result::Result<Self, E> {
        let mut out = self.clone();
        for (_, p) in out.projections_mut() {
            *p = f(p)?;
        }
        out.lm_head = f(&out.lm_head)?;
        Ok(out)
    }

    /// A copy whose decoding steps read only the f32 weights, never the model file's
    /// blocks (same results; for measuring what the blocks save).
    pub fn without_packed_weights(&self) -> Self {
        let Ok(out) = self.with_each_linear(|p| Ok::<_, std::convert::Infallible>(p.without_packed()));
        out
    }

    /// How many of the projections and output head decode from the model file's blocks,
    /// out of how many.
    pub fn packed_projections(&self) -> (usize, usize) {
        let projections = self.projections();
        let packed = projections.iter().filter(|(_, p)| p.is_packed()).count() + usize::from(self.lm_head.is_packed());
        (packed, projections.len() + 1)
    }

    /// The element type of the weights.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// A fresh KV cache sized for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.cfg, capacity)
    }

    /// Logits for every position of `ids` `[batch, seq]`, built from differentiable ops
    /// (training, perplexity). No cache, no padding mask beyond causality: right padding
    /// does not affect earlier positions, so pad labels are simply ignored by the loss.
    pub fn forward_train(&self, ids: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden(ids, None, &Padding::default(), OpMode::Differentiable)?;
        Ok(self.lm_head.forward(&hidden, OpMode::Prompt)?)
    }

    /// Final hidden states `[batch, seq, hidden]` from differentiable ops (training): the
    /// loss applies the output head only where a label counts.
    pub fn forward_train_hidden(&self, ids: &Tensor) -> Result<Tensor> {
        self.hidden(ids, None, &Padding::default(), OpMode::Differentiable)
    }

    /// Loss and gradients with per-layer recomputation (the low-memory path): the forward
    /// pass keeps only each layer's input; the backward pass re-runs one layer at a time
    /// with its graph and chains the input gradient down. Peak activation memory is one
    /// layer's instead of all layers', for about a third more compute. `head_loss` maps the
    /// final hidden states `[batch, seq, hidden]` to the scalar loss. Returns the loss and a
    /// gradient store holding the gradient of every variable the layers use.
    pub fn loss_and_grads_recomputed(
        &self,
        ids: &Tensor,
        head_loss: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, candle_core::backprop::GradStore)> {
        let (b, t) = ids.dims2()?;
        let step = self.step(b, t, 0, &Padding::default(), OpMode::Differentiable, false)?;
        let mut x = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))?.detach();
        let mut inputs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let next = layer.forward(&x, &step, None)?.detach();
            inputs.push(std::mem::replace(&mut x, next));
        }
        let top = candle_core::Var::from_tensor(&x)?;
        let loss = head_loss(&ops::rms_norm(top.as_tensor(), &self.norm, self.cfg.rms_norm_eps, OpMode::Differentiable)?)?;
        let mut store = loss.backward()?;
        let mut grad = store.remove(top.as_tensor()).ok_or_else(|| crate::Error::InvalidArgument("the loss does not depend on the hidden states".into()))?;
        for (layer, input) in self.layers.iter().zip(inputs).rev() {
            let input = candle_core::Var::from_tensor(&input)?;
            let out = layer.forward(input.as_tensor(), &step, None)?;
            let mut grads = (out * &grad)?.sum_all()?.backward()?;
            grad = grads.remove(input.as_tensor()).ok_or_else(|| crate::Error::InvalidArgument("a layer's output does not depend on its input".into()))?;
            // Only the adapter's gradients move to the result, detached: other entries (the
            // upstream gradient's own "gradient", norm weights) would keep this layer's
            // whole graph alive through their backward ops.
            for id in layer.lora_var_ids() {
                if let Some(g) = grads.get_id(id) {
                    let sum = match store.get_id(id) {
                        Some(prev) => (prev + g)?,
                        None => g.detach(),
                    };
                    store.insert_id(id, sum);
                }
            }
        }
        Ok((loss, store))
    }

    /// Hidden states → logits through the (frozen) output head.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden, OpMode::Prompt)?)
    }

    /// Per-row cross-entropy `[n]` of final hidden rows `[n, hidden]` against `targets`,
    /// through the (frozen) output head; fused so that no `[n, vocab]` logits are kept.
    pub fn head_cross_entropy(&self, rows: &Tensor, targets: &[u32]) -> Result<Tensor> {
        if fused::available(rows) && fused::available(self.lm_head.weight()) && self.lm_head.lora().is_none() && self.lm_head.bias().is_none() {
            return Ok(fused::lm_head_cross_entropy(rows, self.lm_head.weight(), targets)?);
        }
        let logits = self.logits(rows)?;
        Ok(ops::cross_entropy_rows(&logits, targets)?)
    }

    /// Final hidden states `[batch, seq, hidden]` from the fast inference kernels (no
    /// gradients): held-out losses apply the output head only where a label counts.
    pub fn forward_hidden(&self, ids: &Tensor) -> Result<Tensor> {
        self.hidden(ids, None, &Padding::default(), OpMode::Prompt)
    }

    /// Logits for every position, using the fast inference kernels (no gradients).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden(ids, None, &Padding::default(), OpMode::Prompt)?;
        Ok(self.lm_head.forward(&hidden, OpMode::Prompt)?)
    }

    /// Incremental decoding: feeds `ids` `[batch, seq]` after what `cache` holds and returns
    /// the logits of the last position of each row, `[batch, vocab]`. `padding` gives each
    /// row's left padding (constant over the whole generation).
    pub fn forward_step(&self, ids: &Tensor, cache: &mut KvCache, padding: &Padding) -> Result<Tensor> {
        let mode = if ids.dim(1)? == 1 { OpMode::Inference } else { OpMode::Prompt };
        let hidden = self.hidden(ids, Some(cache), padding, mode)?;
        let t = hidden.dim(1)?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(self.lm_head.forward(&last, mode)?)
    }

    fn hidden(&self, ids: &Tensor, cache: Option<&mut KvCache>, padding: &Padding, mode: OpMode) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let offset = cache.as_ref().map_or(0, |c| c.len());
        if offset + t > self.rotary.len() {
            return Err(crate::Error::InvalidArgument(format!("sequence of {} tokens exceeds the model's context of {}", offset + t, self.rotary.len())));
        }
        if !padding.left.is_empty() && padding.left.len() != b {
            return Err(crate::Error::InvalidArgument(format!("padding has {} rows but the batch has {b}", padding.left.len())));
        }
        let step = self.step(b, t, offset, padding, mode, cache.is_some())?;
        let mut x = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))?;
        match cache {
            Some(cache) => {
                for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    x = layer.forward(&x, &step, Some(c))?;
                }
            }
            None => {
                for layer in &self.layers {
                    x = layer.forward(&x, &step, None)?;
                }
            }
        }
        Ok(ops::rms_norm(&x, &self.norm, self.cfg.rms_norm_eps, mode)?)
    }

    /// Rotary tables and attention mask for `t` new positions after `offset` cached ones
    /// (`cached`: the pass appends to a KV cache).
    fn step(&self, b: usize, t: usize, offset: usize, padding: &Padding, mode: OpMode, cached: bool) -> Result<Step> {
        let s = offset + t;
        let plain_causal = offset == 0 && padding.is_trivial();
        let fused_attention = plain_causal && !cached && fused::available(&self.embed_tokens);
        let (cos, sin, mask) = if padding.is_trivial() {
            let (cos, sin) = self.rotary.range(offset, t)?;
            let mask = if t > 1 && !fused_attention { Some(causal_mask(t, s, offset, &[0], self.embed_tokens.dtype(), &self.device)?) } else { None };
            (cos, sin, mask)
        } else {
            // Row b's real tokens start at pad[b]; its positions count from there.
            let positions: Vec<u32> = padding.left.iter().flat_map(|&p| (offset..s).map(move |i| i.saturating_sub(p) as u32)).collect();
            let positions = Tensor::from_vec(positions, (b, t), &self.device)?;
            let (cos, sin) = self.rotary.gather(&positions)?;
            (cos, sin, Some(causal_mask(t, s, offset, &padding.left, self.embed_tokens.dtype(), &self.device)?))
        };
        Ok(Step { cos, sin, mask, fused_attention, mode, eps: self.cfg.rms_norm_eps })
    }

    /// Feeds a whole batch at once and returns log-probabilities of each next token,
    /// `[batch, seq - 1]`: entry `(b, i)` is `log p(ids[b, i+1] | ids[b, ..=i])`.
    pub fn token_logprobs(&self, ids: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        let t = ids.dim(1)?;
        let logits = logits.narrow(1, 0, t - 1)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = ids.narrow(1, 1, t - 1)?.contiguous()?.unsqueeze(2)?;
        Ok(logp.gather(&targets, 2)?.squeeze(2)?)
    }
}

/// Additive mask `[rows, 1, 1, t, s]` (rows = 1 or batch): query `i` (absolute position
/// `offset + i`) may see key `j` iff `j <= offset + i` and `j >= pad[row]`.
fn causal_mask(t: usize, s: usize, offset: usize, pad: &[usize], dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let rows = pad.len();
    let mut data = Vec::with_capacity(rows * t * s);
    for &p in pad {
        for i in 0..t {
            for j in 0..s {
                // A padding query sees only itself, so its softmax row stays finite.
                let visible = (j <= offset + i && j >= p) || j == offset + i;
                data.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(data, (rows, 1, 1, t, s), device)?.to_dtype(dtype)
}
