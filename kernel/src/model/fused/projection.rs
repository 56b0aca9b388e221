//! A decoder layer's projections together with what surrounds them, as one op: an RMSNorm
//! or SwiGLU applied to the input, one or more frozen projections (each with its LoRA
//! update and bias) written side by side into one output, and a residual added to it.
//!
//! Why: every op's output in the graph stays alive until the backward pass ends. Done as
//! separate ops, a decoder layer kept two norm outputs, the SwiGLU product and the two
//! projection outputs that only feed residual sums: 3840 of the 9600 values per token it
//! kept (SmolLM2-135M). Inside this op they are working space: the backward pass recomputes
//! the norm or the SwiGLU product from the op's input (element-wise work, negligible beside
//! the products) and the layer keeps 5760 values per token. One product for q/k/v (or
//! gate/up) instead of three (two) also gives the matrix kernels wider outputs.
//!
//! The forward pass computes each projection exactly as [`super::lora_linear`] does
//! (`x·Wᵀ`, then `+ s·(x·Aᵀ)·Bᵀ`, then the bias), then adds the residual: the same values
//! as the composed ops it replaces. `tests/fused_ops.rs` checks it against them, gradients
//! included, and against finite differences.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{gemm, gemm_new, gemm_strided, gemm_to, slice_grads, slice_of, swiglu, with_slice, Float, Operand, SliceBackward, Threads, Trans};
use crate::model::grad_ops::{rms_rows, rms_rows_backward};

/// What the op applies to its input before the projections.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Nothing: the input feeds the projections as it is.
    Plain,
    /// RMSNorm with a frozen `weight` `[in]`.
    RmsNorm {
        /// The norm's scale per feature.
        weight: &'a Tensor,
        /// Added to the mean square.
        eps: f64,
    },
    /// SwiGLU: the input `[.., 2·in]` holds `[gate | up]` per row; the projections read
    /// `silu(gate) ⊙ up`.
    SwiGlu,
}

/// One frozen projection of the op, with its optional bias and LoRA update.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The frozen weight `[out, in]`.
    pub weight: &'a Tensor,
    /// A frozen bias `[out]`.
    pub bias: Option<&'a Tensor>,
    /// The trainable low-rank update.
    pub lora: Option<PartLora<'a>>,
}

/// A LoRA update `scale·(x·Aᵀ)·Bᵀ` of one [`Part`].
#[derive(Debug, Clone, Copy)]
pub struct PartLora<'a> {
    /// `A` `[r, in]`.
    pub a: &'a Tensor,
    /// `B` `[out, r]`.
    pub b: &'a Tensor,
    /// The update's multiplier.
    pub scale: f64,
}

/// `residual + [p₀(f(x)) | p₁(f(x)) | …]` for `x` `[.., in]` (`[.., 2·in]` with
/// [`Input::SwiGlu`]), where `f` is `input` and each `pᵢ(z) = z·Wᵢᵀ + sᵢ·(z·Aᵢᵀ)·Bᵢᵀ + biasᵢ`;
/// the output is `[.., Σ outᵢ]`. Gradients flow to `x`, every LoRA `A` and `B`, and the
/// residual; the weights, biases and norm are frozen.
pub fn project(x: &Tensor, input: Input<'_>, parts: &[Part<'_>], residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let x_width = *dims.last().ok_or_else(|| candle_core::Error::Msg("project: the input has no feature dimension".into()))?;
    let rows = x.elem_count() / x_width.max(1);
    let k = match input {
        Input::SwiGlu if x_width % 2 == 0 => x_width / 2,
        Input::SwiGlu => candle_core::bail!("project: a SwiGLU input needs an even width, got {x_width}"),
        _ => x_width,
    };
    let op = Project::new(input, parts, k, residual.is_some())?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty") = op.width;
    let x2 = x.contiguous()?.reshape((rows, x_width))?;
    let residual = match residual {
        Some(r) if r.dims() == out_dims => Some(r.contiguous()?.reshape((rows, op.width))?),
        Some(r) => candle_core::bail!("project: residual {:?} does not fit the output {out_dims:?}", r.dims()),
        None => None,
    };
    let pack = lora_pack(parts)?;
    let y = match (pack, residual) {
        (None, None) => x2.apply_op1(op)?,
        (Some(p), None) => x2.apply_op2(&p, op)?,
        (None, Some(r)) => x2.apply_op2(&r, op)?,
        (Some(p), Some(r)) => x2.apply_op3(&p, &r, op)?,
    };
    y.reshape(out_dims)
}

/// Every LoRA `A` and `B` of `parts`, flattened and joined in part order (one op argument,
/// so that candle routes their gradients), or `None` without any.
pub(super) fn lora_pack(parts: &[Part<'_>]) -> candle_core::Result<Option<Tensor>> {
    let mut pieces = Vec::new();
    for l in parts.iter().filter_map(|p| p.lora) {
        pieces.push(l.a.flatten_all()?);
        pieces.push(l.b.flatten_all()?);
    }
    if pieces.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::cat(&pieces, 0)?))
}

/// The op's input transform, holding its own handle on the norm weight.
enum InputOp {
    Plain,
    RmsNorm { weight: Tensor, eps: f64 },
    SwiGlu,
}

/// Where a part's LoRA weights sit in the joined argument.
#[derive(Clone, Copy)]
struct LoraSlot {
    rank: usize,
    /// Offset of `A` `[rank, in]`; `B` `[out, rank]` follows it.
    offset: usize,
    scale: f64,
}

/// One projection of the op.
struct FrozenPart {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Output features, and the first output column they fill.
    out: usize,
    column: usize,
    lora: Option<LoraSlot>,
}

/// The op [`project`] applies (also one step of [`super::decoder_layer`]).
pub(super) struct Project {
    input: InputOp,
    parts: Vec<FrozenPart>,
    /// Projection input features.
    k: usize,
    /// Output features (all parts).
    width: usize,
    /// Length of the joined LoRA weights its parts read (0 without LoRA).
    pack_len: usize,
    has_residual: bool,
}

impl Project {
    /// The op for `parts` of input width `k` (see [`project`]).
    pub(super) fn new(input: Input<'_>, parts: &[Part<'_>], k: usize, has_residual: bool) -> candle_core::Result<Self> {
        let input = match input {
            Input::Plain => InputOp::Plain,
            Input::SwiGlu => InputOp::SwiGlu,
            Input::RmsNorm { weight, eps } => {
                if weight.dims() != [k] {
                    candle_core::bail!("project: norm weight {:?} does not fit input width {k}", weight.dims());
                }
                InputOp::RmsNorm { weight: weight.contiguous()?.detach(), eps }
            }
        };
        let (mut column, mut offset, mut frozen) = (0, 0, Vec::with_capacity(parts.len()));
        for (i, p) in parts.iter().enumerate() {
            let (out, in_dim) = p.weight.dims2()?;
            if in_dim != k || p.bias.is_some_and(|b| b.dims() != [out]) {
                candle_core::bail!(
                    "project: part {i} (weight {:?}, bias {:?}) does not fit input width {k}",
                    p.weight.dims(),
                    p.bias.map(|b| b.dims().to_vec())
                );
            }
            let lora = match p.lora {
                Some(l) => {
                    let (rank, a_in) = l.a.dims2()?;
                    if a_in != k || l.b.dims2()? != (out, rank) {
                        candle_core::bail!("project: part {i}'s LoRA A {:?} and B {:?} do not fit weight {:?}", l.a.dims(), l.b.dims(), p.weight.dims());
                    }
                    let slot = LoraSlot { rank, offset, scale: l.scale };
                    offset += rank * (k + out);
                    Some(slot)
                }
                None => None,
            };
            let bias = p.bias.map(|b| b.contiguous().map(|b| b.detach())).transpose()?;
            frozen.push(FrozenPart { weight: p.weight.contiguous()?.detach(), bias, out, column, lora });
            column += out;
        }
        Ok(Self { input, parts: frozen, k, width: column, pack_len: offset, has_residual })
    }

    /// The projections' input for `x` `[m, ·]`: `x` itself, or its norm or SwiGLU product.
    fn transformed<'x, T: Float>(&self, x: &'x [T]) -> candle_core::Result<Cow<'x, [T]>> {
        Ok(match &self.input {
            InputOp::Plain => Cow::Borrowed(x),
            InputOp::RmsNorm { weight, eps } => Cow::Owned(with_slice::<T, _>(weight, |w| Ok(rms_rows(x, w, *eps)))?),
            InputOp::SwiGlu => Cow::Owned(swiglu::forward_joined(x, self.k)),
        })
    }

    /// Output features (all parts).
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// Length of the joined LoRA weights of its parts, in [`lora_pack`]'s order.
    pub(super) fn pack_len(&self) -> usize {
        self.pack_len
    }

    /// `y` `[m, width]`.
    pub(super) fn forward<T: Float>(&self, x: &[T], pack: Option<&[T]>, residual: Option<&[T]>, m: usize) -> candle_core::Result<Vec<T>> {
        let (z, k, width) = (self.transformed(x)?, self.k, self.width);
        // Each part's product writes its columns of `y` without them being zeroed first.
        let mut y: Vec<T> = Vec::with_capacity(m * width);
        for p in &self.parts {
            with_slice::<T, _>(&p.weight, |w| {
                // SAFETY: `y` has capacity `m·width`; the part writes (and does not read) its
                // `out` columns from `column`, inside that extent.
                unsafe {
                    let c = y.as_mut_ptr().add(p.column);
                    gemm_to(
                        m,
                        p.out,
                        k,
                        Operand::packed(&z, k, Trans::No),
                        Operand::packed(w, k, Trans::Yes),
                        c,
                        m * width - p.column,
                        width,
                        false,
                        T::one(),
                        Threads::All,
                    );
                }
                Ok(())
            })?;
        }
        // SAFETY: the parts' columns tile `[0, width)` (`column` runs over their `out`s,
        // see `new`), so every element was written above.
        unsafe { y.set_len(m * width) };
        for p in &self.parts {
            let c = &mut y[p.column..];
            if let (Some(l), Some(pack)) = (p.lora, pack) {
                let (a, b) = l.weights(pack, k, p.out);
                let mut za = vec![T::zero(); m * l.rank];
                gemm(m, l.rank, k, &z, Trans::No, a, Trans::Yes, &mut za, false, T::one(), Threads::All);
                let s = T::from(l.scale).unwrap_or_else(T::one);
                gemm_strided(
                    m,
                    p.out,
                    l.rank,
                    Operand::packed(&za, l.rank, Trans::No),
                    Operand::packed(b, l.rank, Trans::Yes),
                    c,
                    width,
                    true,
                    s,
                    Threads::All,
                );
            }
            if let Some(bias) = &p.bias {
                with_slice::<T, _>(bias, |bias| {
                    for row in y.chunks_mut(width) {
                        for (v, &b) in row[p.column..p.column + p.out].iter_mut().zip(bias) {
                            *v += b;
                        }
                    }
                    Ok(())
                })?;
            }
        }
        if let Some(r) = residual {
            y.par_chunks_mut(1 << 14).zip(r.par_chunks(1 << 14)).for_each(|(y, r)| {
                for (y, &r) in y.iter_mut().zip(r) {
                    *y = r + *y;
                }
            });
        }
        Ok(y)
    }

    /// Forward on CPU storage, dispatching on the element type.
    fn cpu_forward(
        &self,
        x: (&CpuStorage, &Layout),
        pack: Option<(&CpuStorage, &Layout)>,
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = x.1.dims().first().copied().unwrap_or(0);
        fn run<T: Float>(
            op: &Project,
            x: (&CpuStorage, &Layout),
            pack: Option<(&CpuStorage, &Layout)>,
            residual: Option<(&CpuStorage, &Layout)>,
            m: usize,
        ) -> candle_core::Result<Vec<T>> {
            let pack = pack.map(|(s, l)| slice_of::<T>(s, l)).transpose()?;
            let residual = residual.map(|(s, l)| slice_of::<T>(s, l)).transpose()?;
            op.forward(slice_of::<T>(x.0, x.1)?, pack, residual, m)
        }
        let y = match x.0 {
            CpuStorage::F32(_) => CpuStorage::F32(run::<f32>(self, x, pack, residual, m)?),
            CpuStorage::F64(_) => CpuStorage::F64(run::<f64>(self, x, pack, residual, m)?),
            _ => candle_core::bail!("project supports f32 and f64"),
        };
        Ok((y, Shape::from((m, self.width))))
    }

    /// Gradients `(dx, d(joined LoRA weights), d(residual))`.
    fn grads(&self, x: &Tensor, pack: Option<&Tensor>, dy: &Tensor) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let (dx, dpack) = slice_grads(self, x, pack, dy)?;
        Ok((dx, dpack, self.has_residual.then(|| dy.clone())))
    }
}

impl SliceBackward for Project {
    const NAME: &'static str = "project";

    /// `(dx, d(joined LoRA weights))` for upstream `dy` `[m, width]`.
    fn backward<T: Float>(&self, x: &[T], pack: Option<&[T]>, dy: &[T], m: usize) -> candle_core::Result<(Vec<T>, Option<Vec<T>>)> {
        let (z, k, width) = (self.transformed(x)?, self.k, self.width);
        // Written by the first part's product (zeros when there are no parts).
        let mut dz: Vec<T> = if self.parts.is_empty() { vec![T::zero(); m * k] } else { Vec::new() };
        let mut dpack = pack.map(|p| vec![T::zero(); p.len()]);
        for (i, p) in self.parts.iter().enumerate() {
            let dy_p = Operand { data: &dy[p.column..], ld: width, trans: Trans::No };
            // dZ = dY₀ · W₀, then dZ += dYₚ · Wₚ
            with_slice::<T, _>(&p.weight, |w| {
                let w = Operand::packed(w, k, Trans::No);
                if i == 0 {
                    dz = gemm_new(m, k, p.out, dy_p, w, T::one(), Threads::All);
                } else {
                    gemm_strided(m, k, p.out, dy_p, w, &mut dz, k, true, T::one(), Threads::All);
                }
                Ok(())
            })?;
            if let (Some(l), Some(pack), Some(dpack)) = (p.lora, pack, dpack.as_mut()) {
                let (a, b) = l.weights(pack, k, p.out);
                let s = T::from(l.scale).unwrap_or_else(T::one);
                let mut za = vec![T::zero(); m * l.rank];
                gemm(m, l.rank, k, &z, Trans::No, a, Trans::Yes, &mut za, false, T::one(), Threads::All);
                let (da, db) = dpack[l.offset..l.offset + l.rank * (k + p.out)].split_at_mut(l.rank * k);
                // dB = s · dYₚᵀ · (Z·Aᵀ)
                let dy_t = Operand { trans: Trans::Yes, ..dy_p };
                gemm_strided(p.out, l.rank, m, dy_t, Operand::packed(&za, l.rank, Trans::No), db, l.rank, false, s, Threads::All);
                // d(ZA) = s · dYₚ · B, then dA = d(ZA)ᵀ · Z and dZ += d(ZA) · A
                let mut dza = za;
                gemm_strided(m, l.rank, p.out, dy_p, Operand::packed(b, l.rank, Trans::No), &mut dza, l.rank, false, s, Threads::All);
                gemm(l.rank, k, m, &dza, Trans::Yes, &z, Trans::No, da, false, T::one(), Threads::All);
                gemm(m, k, l.rank, &dza, Trans::No, a, Trans::No, &mut dz, true, T::one(), Threads::All);
            }
        }
        let dx = match &self.input {
            InputOp::Plain => dz,
            InputOp::RmsNorm { weight, eps } => with_slice::<T, _>(weight, |w| Ok(rms_rows_backward(x, w, *eps, &dz)))?,
            InputOp::SwiGlu => swiglu::backward_joined(x, &dz, k),
        };
        Ok((dx, dpack))
    }
}

impl LoraSlot {
    /// `(A, B)` of this slot in the joined weights.
    fn weights<'p, T>(&self, pack: &'p [T], k: usize, out: usize) -> (&'p [T], &'p [T]) {
        let (a, rest) = pack[self.offset..self.offset + self.rank * (k + out)].split_at(self.rank * k);
        (a, rest)
    }
}

impl CustomOp1 for Project {
    fn name(&self) -> &'static str {
        "project"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((s, l), None, None)
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.grads(x, None, dy)?.0))
    }
}

impl CustomOp2 for Project {
    fn name(&self) -> &'static str {
        "project"
    }

    /// The second argument is the joined LoRA weights when there are any, else the residual.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if self.pack_len > 0 {
            self.cpu_forward((s1, l1), Some((s2, l2)), None)
        } else {
            self.cpu_forward((s1, l1), None, Some((s2, l2)))
        }
    }

    fn bwd(&self, x: &Tensor, second: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if self.pack_len > 0 {
            let (dx, dpack, _) = self.grads(x, Some(second), dy)?;
            Ok((Some(dx), dpack))
        } else {
            let (dx, _, dres) = self.grads(x, None, dy)?;
            Ok((Some(dx), dres))
        }
    }
}

impl CustomOp3 for Project {
    fn name(&self) -> &'static str {
        "project"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((s1, l1), Some((s2, l2)), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        pack: &Tensor,
        _residual: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dpack, dres) = self.grads(x, Some(pack), dy)?;
        Ok((Some(dx), dpack, dres))
    }
}
