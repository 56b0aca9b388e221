//! The seam where LoRA attaches: [`Linear`], a frozen projection that may carry a
//! [`LoraLayer`] (the low-rank update's weights), and [`PROJECTIONS`], the one table of a
//! decoder layer's projections — their names, HF block, GGUF name and shapes — that the
//! loaders, the decoder and LoRA's `target_modules` all read.
//!
//! A LoRA update as PEFT defines it: `y = base(x) + scale · B(A(dropout(x)))`, with `A`
//! `[r, in]`, `B` `[out, r]` and `scale = alpha / r` (or `alpha / √r` with rsLoRA). Only `A`
//! and `B` are trainable. How they are initialised and saved is `crate::lora`'s business.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor, Var};

use super::bf16_rows::Bf16Rows;
use super::config::ModelConfig;
use super::fused;
use super::int8_rows::Int8Rows;
use super::matmul::{bf16_matmul, block_matmul, block_route, frozen_matmul, BlockProduct, BlockWeights};
use super::ops::OpMode;
use super::packed::PackedRows;
use super::weights::Weights;
use crate::error::Result;

/// Which of the model's widths one side of a projection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// The hidden size.
    Hidden,
    /// All query heads (`heads × head_dim`).
    Heads,
    /// All key/value heads (`kv_heads × head_dim`).
    KvHeads,
    /// The MLP's intermediate size.
    Intermediate,
}

impl Width {
    /// The width in features under `cfg`.
    pub fn of(self, cfg: &ModelConfig) -> usize {
        match self {
            Width::Hidden => cfg.hidden_size,
            Width::Heads => cfg.num_attention_heads * cfg.head_dim(),
            Width::KvHeads => cfg.num_key_value_heads * cfg.head_dim(),
            Width::Intermediate => cfg.intermediate_size,
        }
    }
}

/// One linear projection of a decoder layer (LoRA can target each of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    /// Short name, as PEFT's `target_modules` lists it (`q_proj`).
    pub name: &'static str,
    /// The HF block that holds it (`self_attn` or `mlp`).
    pub block: &'static str,
    /// llama.cpp's name for it in GGUF files (`attn_q`).
    pub gguf: &'static str,
    /// Input features.
    pub input: Width,
    /// Output features.
    pub output: Width,
    /// Whether architectures with q/k/v biases (Qwen2) give it a bias.
    pub qkv_bias: bool,
}

impl Projection {
    /// Its HF module name in decoder layer `layer` (`model.layers.3.self_attn.q_proj`).
    pub fn module(&self, layer: usize) -> String {
        format!("model.layers.{layer}.{}.{}", self.block, self.name)
    }

    /// `(in, out)` features under `cfg`.
    pub fn dims(&self, cfg: &ModelConfig) -> (usize, usize) {
        (self.input.of(cfg), self.output.of(cfg))
    }

    /// Whether it has a bias under `cfg`.
    pub fn has_bias(&self, cfg: &ModelConfig) -> bool {
        self.qkv_bias && cfg.architecture.has_qkv_bias()
    }
}

/// Every decoder layer's projections, in layer order: the one place their names are spelt.
pub const PROJECTIONS: [Projection; 7] = [
    Projection { name: "q_proj", block: "self_attn", gguf: "attn_q", input: Width::Hidden, output: Width::Heads, qkv_bias: true },
    Projection { name: "k_proj", block: "self_attn", gguf: "attn_k", input: Width::Hidden, output: Width::KvHeads, qkv_bias: true },
    Projection { name: "v_proj", block: "self_attn", gguf: "attn_v", input: Width::Hidden, output: Width::KvHeads, qkv_bias: true },
    Projection { name: "o_proj", block: "self_attn", gguf: "attn_output", input: Width::Heads, output: Width::Hidden, qkv_bias: false },
    Projection { name: "gate_proj", block: "mlp", gguf: "ffn_gate", input: Width::Hidden, output: Width::Intermediate, qkv_bias: false },
    Projection { name: "up_proj", block: "mlp", gguf: "ffn_up", input: Width::Hidden, output: Width::Intermediate, qkv_bias: false },
    Projection { name: "down_proj", block: "mlp", gguf: "ffn_down", input: Width::Intermediate, output: Width::Hidden, qkv_bias: false },
];

/// The short names of [`PROJECTIONS`], in the same order.
pub const PROJECTION_NAMES: [&str; PROJECTIONS.len()] = {
    let mut names = [""; PROJECTIONS.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = PROJECTIONS[i].name;
        i += 1;
    }
    names
};

/// The low-rank update of one projection: its trainable weights and how they apply.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// Down projection `[r, in]`.
    pub a: Var,
    /// Up projection `[out, r]`.
    pub b: Var,
    /// Multiplier of the update (`alpha / r`, or `alpha / √r` with rsLoRA).
    pub scale: f64,
    /// Dropout probability on the LoRA path's input during training.
    pub dropout: f32,
}

impl LoraLayer {
    /// A layer from existing `A` `[r, in]` and `B` `[out, r]` tensors.
    pub fn from_tensors(a: &Tensor, b: &Tensor, scale: f64, dropout: f32) -> candle_core::Result<Self> {
        Ok(Self { a: Var::from_tensor(a)?, b: Var::from_tensor(b)?, scale, dropout })
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    /// The update `scale · B(A(dropout(x)))` for `x` `[..., in]`.
    pub fn forward(&self, x: &Tensor, training: bool) -> candle_core::Result<Tensor> {
        let x = if training && self.dropout > 0.0 { candle_nn::ops::dropout(x, self.dropout)? } else { x.clone() };
        let h = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        h.broadcast_matmul(&self.b.as_tensor().t()?)? * self.scale
    }

    /// The dense update `scale · B·A` `[out, in]`, for merging into the base weight.
    ///
    /// Computed from detached copies of `A` and `B` (same storage): they are trainable
    /// variables, so candle would otherwise record each product for a backward pass, and a
    /// merged weight would keep its base weight, `B·A` and the scaled update alive through
    /// that record. `tunelab merge` held three projection-sized tensors per projection
    /// that way (2.1 GB peak for a 135M model against 0.85 GB to write its base).
    pub fn delta_weight(&self) -> candle_core::Result<Tensor> {
        self.b.as_tensor().detach().matmul(&self.a.as_tensor().detach())? * self.scale
    }

    /// `weight + scale · B·A` in `weight`'s dtype: the one way an update is folded into a
    /// base weight, so a merged file and an adapter folded at load time compute the same.
    pub fn folded_into(&self, weight: &Tensor) -> candle_core::Result<Tensor> {
        weight + self.delta_weight()?.to_dtype(weight.dtype())?
    }
}

/// `N` outputs as an array (an error, not a panic, should a product lose one).
fn as_array<const N: usize>(outputs: Vec<Tensor>) -> candle_core::Result<[Tensor; N]> {
    let got = outputs.len();
    outputs.try_into().map_err(|_| candle_core::Error::Msg(format!("{got} outputs for {N} projections")))
}

/// A lower-precision copy of a projection's weight that decoding passes read instead of the
/// f32 weight (see [`super::Transformer::quantized_for_decoding`] and
/// [`super::Transformer::bf16_for_decoding`]).
#[derive(Debug, Clone)]
enum DecodeCopy {
    /// candle's quantized blocks (Q8_0 …).
    Ggml(QMatMul),
    /// bf16 values for the bf16 dot-product kernel.
    Bf16(Arc<Bf16Rows>),
    /// Integer blocks for the 8-bit dot-product kernel (activations rounded to 8 bits).
    Int8(Arc<Int8Rows>),
}

/// A linear projection `y = x Wᵀ + b` with a frozen `W` `[out, in]`, plus an optional LoRA
/// update added on top (the only trainable part), and optionally a quantized copy of `W`
/// for decoding (see [`super::Transformer::quantized_for_decoding`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<LoraLayer>,
    quantized: Option<DecodeCopy>,
    /// The model file's blocks of `weight`, bit-for-bit the same values, which decoding
    /// steps read instead of the f32 copy (a quarter of the bytes or less).
    packed: Option<Arc<PackedRows>>,
}

impl Linear {
    /// A projection from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias, lora: None, quantized: None, packed: None }
    }

    /// The same projection whose decoding steps read `packed`, which must hold exactly
    /// `weight`'s values (the model file's blocks of it).
    pub(crate) fn with_packed(self, packed: Option<Arc<PackedRows>>) -> Self {
        Self { packed: packed.filter(|p| self.weight.dims2().ok() == Some(p.dims())), ..self }
    }

    /// The same projection reading only its f32 weight (for comparing with the packed path).
    pub(crate) fn without_packed(&self) -> Self {
        Self { packed: None, ..self.clone() }
    }

    /// Whether decoding steps read packed blocks of the weight.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`) with shape `[out, in]`.
    fn load(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias { Some(w.get(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
        Ok(Self::new(weight, bias).with_packed(w.packed(&format!("{prefix}.weight"))))
    }

    /// Loads projection `p` of decoder layer `layer`, shaped and biased as `cfg` says.
    pub(crate) fn load_projection(w: &Weights, p: &Projection, layer: usize, cfg: &ModelConfig) -> Result<Self> {
        let (inp, out) = p.dims(cfg);
        Self::load(w, &p.module(layer), inp, out, p.has_bias(cfg))
    }

    /// The same projection with a `dtype`-quantized copy of its weight for decoding, or
    /// unchanged when the weight's rows do not divide into the format's blocks.
    pub(crate) fn with_quantized(&self, dtype: GgmlDType) -> candle_core::Result<Self> {
        let (_, k) = self.weight.dims2()?;
        if k % dtype.block_size() != 0 || !self.weight.device().is_cpu() {
            return Ok(self.clone());
        }
        let q = QTensor::quantize(&self.weight.to_dtype(DType::F32)?, dtype)?;
        Ok(Self { quantized: Some(DecodeCopy::Ggml(QMatMul::QTensor(std::sync::Arc::new(q)))), ..self.clone() })
    }

    /// The same projection with a bf16 copy of its weight for decoding where this crate's
    /// CPU kernels run; elsewhere (a GPU, portable ops) the weight itself stored in bf16,
    /// which [`frozen_matmul`] multiplies with the device's bf16 GEMM.
    pub(crate) fn with_bf16(&self) -> candle_core::Result<Self> {
        if !crate::model::portable::cpu_kernels(&self.weight) {
            return self.with_weight_dtype(DType::BF16);
        }
        let (n, k) = self.weight.dims2()?;
        let values = self.weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { quantized: Some(DecodeCopy::Bf16(Arc::new(Bf16Rows::from_f32(&values, n, k)))), ..self.clone() })
    }

    /// The same projection with an integer-block copy of its weight for decoding steps and
    /// short prompts, multiplied with activations rounded to 8 bits (see
    /// [`super::int8_rows`]): the model file's blocks where it has them, else the f32 weight
    /// rounded to Q8_0. Unchanged where the rows do not divide into blocks of 32 or this
    /// crate's CPU kernels do not run. A LoRA update stays f32 and is added unrounded.
    pub(crate) fn with_int8(&self) -> candle_core::Result<Self> {
        if !crate::model::portable::cpu_kernels(&self.weight) || !super::few_rows::available() {
            return Ok(self.clone());
        }
        let rows = match &self.packed {
            Some(p) => Some(Int8Rows::from_packed(p)),
            None => {
                let (n, k) = self.weight.dims2()?;
                Int8Rows::from_f32(&self.weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, n, k)
            }
        };
        Ok(match rows {
            Some(rows) => Self { quantized: Some(DecodeCopy::Int8(Arc::new(rows))), ..self.clone() },
            None => self.clone(),
        })
    }

    /// The same projection with its frozen weight stored as `dtype` (the bias and any LoRA
    /// update keep theirs) and no lower-precision copies: [`frozen_matmul`] then multiplies
    /// with the device's GEMM in `dtype`.
    pub(crate) fn with_weight_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        Ok(Self { weight: self.weight.to_dtype(dtype)?, packed: None, quantized: None, ..self.clone() })
    }

    /// The same projection on `device`. The file's blocks and decoding copies are CPU
    /// structures: they stay only when `device` is the CPU.
    pub(crate) fn to_device(&self, device: &candle_core::Device) -> candle_core::Result<Self> {
        self.to_device_with_weight(device, self.weight.to_device(device)?)
    }

    /// [`Linear::to_device`] with the weight already moved (a tied output head shares the
    /// moved embedding table instead of holding a second copy on the device).
    pub(crate) fn to_device_with_weight(&self, device: &candle_core::Device, weight: Tensor) -> candle_core::Result<Self> {
        let keep_cpu_copies = device.is_cpu();
        let lora = match &self.lora {
            Some(l) => Some(LoraLayer::from_tensors(&l.a.as_tensor().to_device(device)?, &l.b.as_tensor().to_device(device)?, l.scale, l.dropout)?),
            None => None,
        };
        Ok(Self {
            weight,
            bias: self.bias.as_ref().map(|b| b.to_device(device)).transpose()?,
            lora,
            quantized: self.quantized.clone().filter(|_| keep_cpu_copies),
            packed: self.packed.clone().filter(|_| keep_cpu_copies),
        })
    }

    /// A copy whose weight and bias share storage with this one but carry tensor ids from
    /// the calling code's copy of candle (see [`super::Transformer::with_fresh_ids`]).
    pub(crate) fn with_fresh_ids(&self) -> candle_core::Result<Self> {
        let fresh = |t: &Tensor| t.broadcast_as(t.shape());
        Ok(Self { weight: fresh(&self.weight)?, bias: self.bias.as_ref().map(fresh).transpose()?, ..self.clone() })
    }

    /// The weight matrix `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        let (out, inp) = self.weight.dims2().unwrap_or((0, 0));
        (inp, out)
    }

    /// The attached LoRA update, if any.
    pub fn lora(&self) -> Option<&LoraLayer> {
        self.lora.as_ref()
    }

    /// Attaches (or with `None`, removes) a LoRA update.
    pub fn set_lora(&mut self, lora: Option<LoraLayer>) {
        self.lora = lora;
    }

    /// This projection as a part of a fused training op ([`fused::project`]), or `None` when
    /// its LoRA update uses dropout in training (the composed path draws the mask) or its
    /// weight or bias is itself being differentiated (the op treats them as frozen).
    pub(crate) fn fused_part(&self, training: bool) -> Option<fused::Part<'_>> {
        if self.weight.track_op() || self.bias.as_ref().is_some_and(Tensor::track_op) || !fused::available(&self.weight) {
            return None;
        }
        let lora = match &self.lora {
            Some(l) if training && l.dropout > 0.0 => return None,
            Some(l) => Some(fused::PartLora { a: l.a.as_tensor(), b: l.b.as_tensor(), scale: l.scale }),
            None => None,
        };
        Some(fused::Part { weight: &self.weight, bias: self.bias.as_ref(), lora })
    }

    /// Whether passes of kind `mode` multiply this projection by the few-rows kernels over
    /// block weights. For prompt passes that means row by row, whatever the number of rows,
    /// so a row's result does not depend on which other rows share the pass (the f32
    /// weight's product does not qualify: past the few-rows kernel's rows it is a blocked
    /// GEMM); for decoding passes, that every parallel loop runs on the step's spinning team.
    pub(crate) fn multiplies_by_blocks(&self, mode: OpMode) -> bool {
        self.block_product(mode).is_some_and(|p| block_route(&[p]))
    }

    /// This projection as a block product for a pass of kind `mode` (its integer blocks, else
    /// the file's blocks, with its LoRA update), or `None` where the pass reads another copy
    /// (Q8_0 in decoding steps, bf16) or the f32 weight (training, no blocks).
    fn block_product(&self, mode: OpMode) -> Option<BlockProduct<'_>> {
        let lora = self.lora.as_ref().map(|l| (l.a.as_tensor(), l.b.as_tensor(), l.scale));
        match (&self.quantized, &self.packed, mode) {
            (_, _, OpMode::Differentiable) => None,
            (Some(DecodeCopy::Int8(w)), _, _) => Some((BlockWeights::Int8(w), lora)),
            _ if self.decode_copy(mode).is_some() => None,
            (_, Some(p), _) => Some((BlockWeights::Packed(p), lora)),
            _ => None,
        }
    }

    /// The Q8_0 or bf16 copy a pass of kind `mode` reads instead of the weight (decoding
    /// passes read the Q8_0 one, prompt passes too the bf16 one; never with a LoRA update
    /// attached): the choice follows the kind of pass, never how many rows share it.
    fn decode_copy(&self, mode: OpMode) -> Option<&DecodeCopy> {
        match (&self.quantized, mode, &self.lora) {
            (Some(q @ DecodeCopy::Ggml(_)), OpMode::Inference, None) => Some(q),
            (Some(q @ DecodeCopy::Bf16(_)), OpMode::Inference | OpMode::Prompt, None) => Some(q),
            _ => None,
        }
    }

    /// Applies several projections to the same `x` (q, k and v; gate and up): in one
    /// parallel block product where all of them take the same kind (the file's blocks or
    /// integer blocks) and `x` has few rows (one fork and join instead of one each), else one
    /// [`Linear::forward`] each. The results are the same either way.
    pub fn forward_joined<const N: usize>(projections: [&Linear; N], x: &Tensor, mode: OpMode) -> candle_core::Result<[Tensor; N]> {
        let products: Option<Vec<BlockProduct<'_>>> = projections.iter().map(|p| p.block_product(mode)).collect();
        if let Some(ys) = products.map(|products| block_matmul(x, &products)).transpose()?.flatten() {
            let mut out = Vec::with_capacity(N);
            for (y, p) in ys.into_iter().zip(projections) {
                out.push(p.with_bias(y)?);
            }
            return as_array(out);
        }
        let mut out = Vec::with_capacity(N);
        for p in projections {
            out.push(p.forward(x, mode)?);
        }
        as_array(out)
    }

    /// `y` plus the bias, if any.
    fn with_bias(&self, y: Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Applies the projection to `x` of shape `[..., in]`; LoRA dropout is active only in
    /// [`OpMode::Differentiable`] (training).
    pub fn forward(&self, x: &Tensor, mode: OpMode) -> candle_core::Result<Tensor> {
        let copy = if x.dtype() == DType::F32 { self.decode_copy(mode) } else { None };
        match copy {
            Some(DecodeCopy::Ggml(q)) => return self.with_bias(q.forward(&x.contiguous()?)?),
            Some(DecodeCopy::Bf16(b)) => return self.with_bias(bf16_matmul(x, b)?),
            _ => {}
        }
        // Inference passes with few rows (decoding steps, short prompts) read blocks: the
        // file's (the same values as the f32 weight, the same kernel, so the same result,
        // from fewer bytes) or the integer copy (`--weights int8-dot`), with a LoRA term
        // added in the same parallel tasks.
        if let Some(product) = self.block_product(mode) {
            if let Some(y) = block_matmul(x, &[product])?.and_then(|mut y| y.pop()) {
                return self.with_bias(y);
            }
        }
        let training = mode == OpMode::Differentiable;
        // One fused op for base + LoRA unless dropout needs the composed path's mask.
        let fused_lora = self.lora.as_ref().filter(|l| (!training || l.dropout == 0.0) && fused::available(x) && self.weight.dtype() == x.dtype());
        let y = match fused_lora {
            Some(l) => fused::lora_linear(x, &self.weight, l.a.as_tensor(), l.b.as_tensor(), l.scale)?,
            None => frozen_matmul(x, &self.weight)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        match &self.lora {
            Some(lora) if fused_lora.is_none() => y + lora.forward(x, training)?,
            _ => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_names_follow_the_table() {
        assert_eq!(PROJECTION_NAMES, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]);
        assert_eq!(PROJECTIONS[6].module(2), "model.layers.2.mlp.down_proj");
    }

    /// A folded weight is plain data: it records no product of the adapter's trainable
    /// variables, so it does not keep the base weight and the update alive beside itself.
    #[test]
    fn a_folded_weight_holds_no_record_of_how_it_was_computed() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        let a = Tensor::new(&[[1f32, 2.0, 3.0], [0.5, -1.0, 2.0]], &dev)?;
        let b = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [2.0, -1.0], [1.0, 1.0]], &dev)?;
        let layer = LoraLayer::from_tensors(&a, &b, 0.5, 0.0)?;
        let weight = Tensor::ones((4, 3), DType::F32, &dev)?;
        let folded = layer.folded_into(&weight)?;
        assert!(!layer.delta_weight()?.track_op() && !folded.track_op());
        // The values are still weight + scale · B·A.
        let expected = (&weight + (b.matmul(&a)? * 0.5)?)?;
        assert_eq!(folded.to_vec2::<f32>()?, expected.to_vec2::<f32>()?);
        Ok(())
    }
}
