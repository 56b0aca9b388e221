//! The SwiGLU gate `silu(g) ⊙ u` as one op: it keeps only its two inputs (which the graph
//! holds anyway) instead of `silu(g)` as well, and computes both gradients in one pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{slice_of, tensor, with_slice, Float};

/// Elements per parallel chunk.
const CHUNK: usize = 4096;

/// `silu(g) ⊙ u` for `g`, `u` of the same shape.
pub fn swiglu(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    if g.dims() != u.dims() {
        candle_core::bail!("swiglu: gate {:?} and up {:?} differ in shape", g.dims(), u.dims());
    }
    g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)
}

struct SwiGlu;

/// Writes `σ(g)` into `out` (the exponentials many at a time, see `Float::exp_in_place`).
fn sigmoid_into<T: Float>(g: &[T], out: &mut [T]) {
    for (o, &g) in out.iter_mut().zip(g) {
        *o = -g;
    }
    T::exp_in_place(out);
    for o in out.iter_mut() {
        *o = (T::one() + *o).recip();
    }
}

/// `out = silu(g)·u`, elementwise.
fn silu_mul_into<T: Float>(g: &[T], u: &[T], out: &mut [T]) {
    sigmoid_into(g, out);
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g * *o * u;
    }
}

/// `(dg, du)` of `silu(g)·u` for upstream gradient `dy`, elementwise:
/// `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dy·silu(g)`.
fn silu_mul_grad_into<T: Float>(g: &[T], u: &[T], dy: &[T], dg: &mut [T], du: &mut [T]) {
    sigmoid_into(g, dg);
    for i in 0..g.len() {
        let s = dg[i];
        (dg[i], du[i]) = (dy[i] * u[i] * s * (T::one() + g[i] * (T::one() - s)), dy[i] * g[i] * s);
    }
}

fn forward<T: Float>(g: &[T], u: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); g.len()];
    // A decoding step's rows run on its spinning team (a rayon loop elsewhere).
    crate::model::team::for_each_chunk_mut(&mut out, CHUNK, |i, o| {
        let at = i * CHUNK..i * CHUNK + o.len();
        silu_mul_into(&g[at.clone()], &u[at], o)
    });
    out
}

/// `(dg, du)` for upstream gradient `dy`.
fn backward<T: Float>(g: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (mut dg, mut du) = (vec![T::zero(); g.len()], vec![T::zero(); g.len()]);
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)))
        .for_each(|((dg, du), ((g, u), dy))| silu_mul_grad_into(g, u, dy, dg, du));
    (dg, du)
}

/// `silu(g)·u` `[rows, f]` of rows laid out `[g | u]` (`[rows, 2f]`, as one fused gate/up
/// projection writes them).
pub(crate) fn forward_joined<T: Float>(gu: &[T], f: usize) -> Vec<T> {
    let mut out = vec![T::zero(); gu.len() / 2];
    out.par_chunks_mut(f).zip(gu.par_chunks(2 * f)).for_each(|(o, row)| {
        let (g, u) = row.split_at(f);
        silu_mul_into(g, u, o);
    });
    out
}

/// The gradient `[rows, 2f]` (laid out `[dg | du]`) of [`forward_joined`] for upstream `dy`
/// `[rows, f]`.
pub(crate) fn backward_joined<T: Float>(gu: &[T], dy: &[T], f: usize) -> Vec<T> {
    let mut dgu = vec![T::zero(); gu.len()];
    dgu.par_chunks_mut(2 * f).zip(gu.par_chunks(2 * f).zip(dy.par_chunks(f))).for_each(|(d, (row, dy))| {
        let (g, u) = row.split_at(f);
        let (dg, du) = d.split_at_mut(f);
        silu_mul_grad_into(g, u, dy, dg, du);
    });
    dgu
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(slice_of(s1, l1)?, slice_of(s2, l2)?)),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(slice_of(s1, l1)?, slice_of(s2, l2)?)),
            _ => candle_core::bail!("swiglu supports f32 and f64"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(g: &Tensor, u: &Tensor, dy: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
            let (dg, du) = with_slice::<T, _>(g, |gs| with_slice::<T, _>(u, |us| with_slice::<T, _>(dy, |dys| Ok(backward(gs, us, dys)))))?;
            Ok((tensor(dg, g.dims())?, tensor(du, g.dims())?))
        }
        let (dg, du) = match g.dtype() {
            candle_core::DType::F32 => run::<f32>(g, u, dy)?,
            candle_core::DType::F64 => run::<f64>(g, u, dy)?,
            dt => candle_core::bail!("swiglu supports f32 and f64, got {dt:?}"),
        };
        Ok((Some(dg), Some(du)))
    }
}
