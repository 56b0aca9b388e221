//! A frozen projection with its LoRA update as one op: `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`.
//!
//! Forward writes the LoRA term into the base product's output (one output-sized tensor
//! instead of four). Backward recomputes the rank-`r` bottleneck `x·Aᵀ` (`r` columns, cheap)
//! and returns `dX = dY·W + s·(dY·B)·A`, `dA = s·(dY·B)ᵀ·x`, `dB = s·dYᵀ·(x·Aᵀ)`; the frozen
//! `W` gets no gradient and costs no `dW` product.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::{gemm, slice_of, tensor, with_slice, Float, Threads, Trans};

/// `x·Wᵀ + scale·(x·Aᵀ)·Bᵀ` for `x` `[..., in]`, a frozen `w` `[out, in]`, trainable `a`
/// `[r, in]` and `b` `[out, r]`; gradients flow to `x`, `a` and `b`.
pub fn lora_linear(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("projection input has a last dimension");
    let rows = x.elem_count() / k.max(1);
    let (out, in_dim) = w.dims2()?;
    let (r, a_in) = a.dims2()?;
    if in_dim != k || a_in != k || b.dims2()? != (out, r) {
        candle_core::bail!("lora_linear: x {:?}, w {:?}, a {:?}, b {:?} do not fit", x.dims(), w.dims(), a.dims(), b.dims());
    }
    let x2 = x.contiguous()?.reshape((rows, k))?;
    let op = LoraLinear { w: w.contiguous()?.detach(), scale };
    let y = x2.apply_op3(&a.contiguous()?, &b.contiguous()?, op)?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty") = out;
    y.reshape(out_dims)
}

struct LoraLinear {
    w: Tensor,
    scale: f64,
}

/// Forward on slices: `y[m, out]`.
#[allow(clippy::too_many_arguments)] // the product's operands and their four dimensions
fn forward<T: Float>(x: &[T], w: &[T], a: &[T], b: &[T], m: usize, k: usize, out: usize, r: usize, scale: f64) -> Vec<T> {
    let mut y = vec![T::zero(); m * out];
    gemm(m, out, k, x, Trans::No, w, Trans::Yes, &mut y, false, T::one(), Threads::All);
    let mut xa = vec![T::zero(); m * r];
    gemm(m, r, k, x, Trans::No, a, Trans::Yes, &mut xa, false, T::one(), Threads::All);
    gemm(m, out, r, &xa, Trans::No, b, Trans::Yes, &mut y, true, T::from(scale).unwrap_or_else(T::one), Threads::All);
    y
}

/// Gradients `(dx, da, db)` on slices.
#[allow(clippy::too_many_arguments)]
fn backward<T: Float>(x: &[T], w: &[T], a: &[T], b: &[T], dy: &[T], m: usize, k: usize, out: usize, r: usize, scale: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let s = T::from(scale).unwrap_or_else(T::one);
    let mut xa = vec![T::zero(); m * r];
    gemm(m, r, k, x, Trans::No, a, Trans::Yes, &mut xa, false, T::one(), Threads::All);
    // dB = s · dYᵀ · (x·Aᵀ)   [out, r]
    let mut db = vec![T::zero(); out * r];
    gemm(out, r, m, dy, Trans::Yes, &xa, Trans::No, &mut db, false, s, Threads::All);
    // d(xA) = s · dY · B   [m, r]
    let mut dxa = xa;
    gemm(m, r, out, dy, Trans::No, b, Trans::No, &mut dxa, false, s, Threads::All);
    // dA = d(xA)ᵀ · x   [r, k]
    let mut da = vec![T::zero(); r * k];
    gemm(r, k, m, &dxa, Trans::Yes, x, Trans::No, &mut da, false, T::one(), Threads::All);
    // dX = dY · W + d(xA) · A   [m, k]
    let mut dx = vec![T::zero(); m * k];
    gemm(m, k, out, dy, Trans::No, w, Trans::No, &mut dx, false, T::one(), Threads::All);
    gemm(m, k, r, &dxa, Trans::No, a, Trans::No, &mut dx, true, T::one(), Threads::All);
    (dx, da, db)
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (r, _) = l2.shape().dims2()?;
        let (out, _) = l3.shape().dims2()?;
        let y = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(with_slice(&self.w, |w| {
                Ok(forward::<f32>(slice_of(s1, l1)?, w, slice_of(s2, l2)?, slice_of(s3, l3)?, m, k, out, r, self.scale))
            })?),
            CpuStorage::F64(_) => CpuStorage::F64(with_slice(&self.w, |w| {
                Ok(forward::<f64>(slice_of(s1, l1)?, w, slice_of(s2, l2)?, slice_of(s3, l3)?, m, k, out, r, self.scale))
            })?),
            _ => candle_core::bail!("lora_linear supports f32 and f64"),
        };
        Ok((y, Shape::from((m, out))))
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let (r, _) = a.dims2()?;
        let (out, _) = b.dims2()?;
        #[allow(clippy::too_many_arguments)] // the backward's tensors and their four dimensions
        fn run<T: Float>(
            op: &LoraLinear,
            x: &Tensor,
            a: &Tensor,
            b: &Tensor,
            dy: &Tensor,
            m: usize,
            k: usize,
            out: usize,
            r: usize,
        ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let (dx, da, db) = with_slice::<T, _>(x, |x| {
                with_slice::<T, _>(&op.w, |w| {
                    with_slice::<T, _>(a, |a| with_slice::<T, _>(b, |b| with_slice::<T, _>(dy, |dy| Ok(backward(x, w, a, b, dy, m, k, out, r, op.scale)))))
                })
            })?;
            Ok((tensor(dx, &[m, k])?, tensor(da, &[r, k])?, tensor(db, &[out, r])?))
        }
        let (dx, da, db) = match x.dtype() {
            candle_core::DType::F32 => run::<f32>(self, x, a, b, dy, m, k, out, r)?,
            candle_core::DType::F64 => run::<f64>(self, x, a, b, dy, m, k, out, r)?,
            dt => candle_core::bail!("lora_linear supports f32 and f64, got {dt:?}"),
        };
        Ok((Some(dx), Some(da), Some(db)))
    }
}
