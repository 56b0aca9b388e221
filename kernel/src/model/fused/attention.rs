//! Causal self-attention with rotary embedding as one op that keeps no score matrix.
//!
//! Input: the projections `q` `[b, t, heads·d]`, `k` and `v` `[b, t, kv_heads·d]` side by
//! side in one tensor `[b, t, (heads + 2·kv_heads)·d]`, as one fused q/k/v projection
//! writes them (no transposed copies); output `[b, t, heads·d]`, ready for the output
//! projection. Positions are `0..t` in every row (training: right padding, no cache).
//! Query head `h` reads key/value head `h / (heads / kv_heads)` (grouped-query attention,
//! as HF's `repeat_kv`).
//!
//! Forward keeps only the output and each row's log-sum-exp; backward recomputes the scores
//! block by block (FlashAttention's recurrence): `P = exp(S − lse)`, `dV = Pᵀ·dO`,
//! `dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O))`, `dQ = dS·K`, `dK = dSᵀ·Q`, then the inverse rotation.
//! Work runs in parallel over (batch, key/value head) groups; row blocks skip the keys the
//! causal mask hides.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{gemm, slice_of, tensor, with_slice, Float, Threads, Trans};

/// Query rows per block: scores are computed for `BLOCK × keys-so-far` at a time.
const BLOCK: usize = 64;

/// Causal attention of `q` `[b, t, heads·d]` over `k`, `v` `[b, t, kv_heads·d]`, applying the
/// rotate-half rotary embedding with tables `cos`, `sin` `[t, d/2]` to `q` and `k` first.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, kv_heads: usize, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, qw) = q.dims3()?;
    let (kb, kt, kw) = k.dims3()?;
    if v.dims3()? != (kb, kt, kw) || (kb, kt) != (b, t) || kw * heads != qw * kv_heads {
        candle_core::bail!("causal_attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads and {kv_heads} key/value heads", q.dims(), k.dims(), v.dims());
    }
    causal_attention_joined(&Tensor::cat(&[q, k, v], 2)?, heads, kv_heads, cos, sin)
}

/// [`causal_attention`] of `qkv` `[b, t, (heads + 2·kv_heads)·d]`: the queries, keys and
/// values side by side in each row (one fused q/k/v projection's output).
pub fn causal_attention_joined(qkv: &Tensor, heads: usize, kv_heads: usize, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, width) = qkv.dims3()?;
    qkv.contiguous()?.apply_op1(CausalAttention::new(b, t, width, heads, kv_heads, cos, sin)?)
}

impl CausalAttention {
    /// The op for `b` rows of `t` positions of joined q/k/v `width` wide, checking that the
    /// heads and rotary tables fit.
    pub(super) fn new(b: usize, t: usize, width: usize, heads: usize, kv_heads: usize, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Self> {
        let per_head = heads + 2 * kv_heads;
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || !width.is_multiple_of(per_head) {
            candle_core::bail!("causal_attention: {heads} heads and {kv_heads} key/value heads do not fit width {width}");
        }
        let d = width / per_head;
        if cos.dims2()? != (t, d / 2) || sin.dims2()? != (t, d / 2) {
            candle_core::bail!("causal_attention: rotary tables {:?} do not fit {t} positions of head size {d}", cos.dims());
        }
        let table = |x: &Tensor| -> candle_core::Result<Vec<f64>> { x.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1() };
        Ok(Self { dims: Dims { b, t, heads, kv_heads, d }, cos: table(cos)?, sin: table(sin)?, lse: Mutex::new(Vec::new()) })
    }

    /// Width of an output row (all query heads).
    pub(super) fn out_width(&self) -> usize {
        self.dims.out_width()
    }
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl Dims {
    fn n_rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Width of a joined q/k/v row.
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.d
    }

    /// Width of an output row (all query heads).
    fn out_width(&self) -> usize {
        self.heads * self.d
    }

    /// Column of query head `h` in a q/k/v row (and in an output row).
    fn q_col(&self, h: usize) -> usize {
        h * self.d
    }

    /// Column of key head `kh` in a q/k/v row.
    fn k_col(&self, kh: usize) -> usize {
        (self.heads + kh) * self.d
    }

    /// Column of value head `kh` in a q/k/v row.
    fn v_col(&self, kh: usize) -> usize {
        (self.heads + self.kv_heads + kh) * self.d
    }
}

pub(super) struct CausalAttention {
    dims: Dims,
    cos: Vec<f64>,
    sin: Vec<f64>,
    /// Log-sum-exp of each score row, `[b, heads, t]`, written by the forward pass.
    lse: Mutex<Vec<f64>>,
}

/// The `d` columns from `col` of batch row `bi` of `src` `[b, t, width]` (one head) as a
/// packed `[t, d]` matrix.
fn gather_head<T: Float>(src: &[T], bi: usize, col: usize, t: usize, width: usize, d: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(t * d);
    for i in 0..t {
        let start = (bi * t + i) * width + col;
        out.extend_from_slice(&src[start..start + d]);
    }
    out
}

/// Writes a packed `[t, d]` head back into the `d` columns from `col` of `dst` `[b, t, width]`.
fn scatter_head<T: Float>(dst: &mut [T], head: &[T], bi: usize, col: usize, t: usize, width: usize, d: usize) {
    for i in 0..t {
        let start = (bi * t + i) * width + col;
        dst[start..start + d].copy_from_slice(&head[i * d..(i + 1) * d]);
    }
}

/// Rotates a packed `[t, d]` head in place by position (`sign` −1 undoes the rotation).
pub(crate) fn rotate<T: Float>(x: &mut [T], t: usize, d: usize, cos: &[f64], sin: &[f64], sign: f64) {
    let half = d / 2;
    for pos in 0..t {
        let row = &mut x[pos * d..(pos + 1) * d];
        for i in 0..half {
            let c = T::from(cos[pos * half + i]).unwrap_or_else(T::zero);
            let s = T::from(sign * sin[pos * half + i]).unwrap_or_else(T::zero);
            let (x1, x2) = (row[i], row[i + half]);
            row[i] = x1 * c - x2 * s;
            row[i + half] = x2 * c + x1 * s;
        }
    }
}

/// Row blocks `(first row, rows, keys visible to the block)`.
fn blocks(t: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..t).step_by(BLOCK).map(move |i0| {
        let rows = BLOCK.min(t - i0);
        (i0, rows, i0 + rows)
    })
}

/// What every query head of one (batch row, key/value head) group shares.
struct GroupInputs<T> {
    bi: usize,
    kh: usize,
    /// `1/√d`.
    scale: T,
    /// Rotated keys, packed `[t, d]`.
    keys: Vec<T>,
    /// Values, packed `[t, d]`.
    values: Vec<T>,
}

/// Gathers group `g`'s keys (rotated) and values from the q/k/v rows.
fn group_inputs<T: Float>(qkv: &[T], dm: Dims, g: usize, cos: &[f64], sin: &[f64]) -> GroupInputs<T> {
    let (bi, kh) = (g / dm.kv_heads, g % dm.kv_heads);
    let scale = T::from(1.0 / (dm.d as f64).sqrt()).unwrap_or_else(T::one);
    let keys = rotated_head(qkv, bi, dm.k_col(kh), dm, cos, sin);
    let values = gather_head(qkv, bi, dm.v_col(kh), dm.t, dm.width(), dm.d);
    GroupInputs { bi, kh, scale, keys, values }
}

/// The head at column `col` of batch row `bi` of the q/k/v rows, packed `[t, d]` and
/// rotated by position.
fn rotated_head<T: Float>(qkv: &[T], bi: usize, col: usize, dm: Dims, cos: &[f64], sin: &[f64]) -> Vec<T> {
    let mut x = gather_head(qkv, bi, col, dm.t, dm.width(), dm.d);
    rotate(&mut x, dm.t, dm.d, cos, sin, 1.0);
    x
}

/// One group's forward: outputs `[n_rep][t, d]` and log-sum-exps `[n_rep][t]`.
fn forward_group<T: Float>(qkv: &[T], dm: Dims, g: usize, cos: &[f64], sin: &[f64]) -> (Vec<Vec<T>>, Vec<Vec<f64>>) {
    let Dims { t, d, .. } = dm;
    let GroupInputs { bi, kh, scale, keys: kb, values: vb } = group_inputs(qkv, dm, g, cos, sin);
    let mut s = vec![T::zero(); BLOCK * t];
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for r in 0..dm.n_rep() {
        let h = kh * dm.n_rep() + r;
        let qb = rotated_head(qkv, bi, dm.q_col(h), dm, cos, sin);
        let mut o = vec![T::zero(); t * d];
        let mut lse = vec![0f64; t];
        for (i0, rows, keys) in blocks(t) {
            let s = &mut s[..rows * keys];
            gemm(rows, keys, d, &qb[i0 * d..], Trans::No, &kb, Trans::Yes, s, false, scale, Threads::One);
            for ri in 0..rows {
                let row = &mut s[ri * keys..(ri + 1) * keys];
                let visible = i0 + ri + 1;
                let max = row[..visible].iter().copied().fold(T::neg_infinity(), num_traits::Float::max);
                for x in &mut row[..visible] {
                    *x -= max;
                }
                T::exp_in_place(&mut row[..visible]);
                let sum = row[..visible].iter().fold(T::zero(), |a, &x| a + x);
                let inv = sum.recip();
                for x in &mut row[..visible] {
                    *x *= inv;
                }
                row[visible..].fill(T::zero());
                lse[i0 + ri] = num_traits::ToPrimitive::to_f64(&max).unwrap_or(0.0) + num_traits::ToPrimitive::to_f64(&sum).unwrap_or(1.0).ln();
            }
            gemm(rows, d, keys, s, Trans::No, &vb, Trans::No, &mut o[i0 * d..], false, T::one(), Threads::One);
        }
        outs.push(o);
        lses.push(lse);
    }
    (outs, lses)
}

/// Gradients of one group: `dq` per query head `[n_rep][t, d]`, and `dk`, `dv` `[t, d]`.
#[allow(clippy::too_many_arguments)]
fn backward_group<T: Float>(qkv: &[T], o: &[T], dout: &[T], lse: &[f64], dm: Dims, g: usize, cos: &[f64], sin: &[f64]) -> (Vec<Vec<T>>, Vec<T>, Vec<T>) {
    let Dims { t, heads, d, .. } = dm;
    let GroupInputs { bi, kh, scale, keys: kb, values: vb } = group_inputs(qkv, dm, g, cos, sin);
    let (mut dk, mut dv) = (vec![T::zero(); t * d], vec![T::zero(); t * d]);
    let mut p = vec![T::zero(); BLOCK * t];
    let mut ds = vec![T::zero(); BLOCK * t];
    let mut dqs = Vec::new();
    for r in 0..dm.n_rep() {
        let h = kh * dm.n_rep() + r;
        let qb = rotated_head(qkv, bi, dm.q_col(h), dm, cos, sin);
        let ob = gather_head(o, bi, dm.q_col(h), t, dm.out_width(), d);
        let dob = gather_head(dout, bi, dm.q_col(h), t, dm.out_width(), d);
        let lse = &lse[(bi * heads + h) * t..(bi * heads + h + 1) * t];
        let mut dq = vec![T::zero(); t * d];
        for (i0, rows, keys) in blocks(t) {
            let (p, ds) = (&mut p[..rows * keys], &mut ds[..rows * keys]);
            gemm(rows, keys, d, &qb[i0 * d..], Trans::No, &kb, Trans::Yes, p, false, scale, Threads::One);
            for ri in 0..rows {
                let row = &mut p[ri * keys..(ri + 1) * keys];
                let visible = i0 + ri + 1;
                let l = T::from(lse[i0 + ri]).unwrap_or_else(T::zero);
                for x in &mut row[..visible] {
                    *x -= l;
                }
                T::exp_in_place(&mut row[..visible]);
                row[visible..].fill(T::zero());
            }
            let dob_blk = &dob[i0 * d..(i0 + rows) * d];
            // dV[..keys] += Pᵀ · dO
            gemm(keys, d, rows, p, Trans::Yes, dob_blk, Trans::No, &mut dv[..keys * d], true, T::one(), Threads::One);
            // dP = dO · Vᵀ, then dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale
            gemm(rows, keys, d, dob_blk, Trans::No, &vb, Trans::Yes, ds, false, T::one(), Threads::One);
            for ri in 0..rows {
                let i = i0 + ri;
                let delta: T = (0..d).map(|c| dob[i * d + c] * ob[i * d + c]).sum();
                let (prow, srow) = (&p[ri * keys..(ri + 1) * keys], &mut ds[ri * keys..(ri + 1) * keys]);
                for (sv, &pv) in srow.iter_mut().zip(prow) {
                    *sv = pv * (*sv - delta) * scale;
                }
            }
            // dQ[block] = dS · K ; dK[..keys] += dSᵀ · Q[block]
            gemm(rows, d, keys, ds, Trans::No, &kb, Trans::No, &mut dq[i0 * d..], false, T::one(), Threads::One);
            gemm(keys, d, rows, ds, Trans::Yes, &qb[i0 * d..], Trans::No, &mut dk[..keys * d], true, T::one(), Threads::One);
        }
        rotate(&mut dq, t, d, cos, sin, -1.0);
        dqs.push(dq);
    }
    rotate(&mut dk, t, d, cos, sin, -1.0);
    (dqs, dk, dv)
}

impl CausalAttention {
    /// Output rows `[b·t, heads·d]` for joined q/k/v rows; keeps the log-sum-exps for
    /// [`CausalAttention::backward`].
    pub(super) fn forward<T: Float>(&self, qkv: &[T]) -> Vec<T> {
        let dm = self.dims;
        let groups: Vec<_> = (0..dm.b * dm.kv_heads).into_par_iter().map(|g| forward_group(qkv, dm, g, &self.cos, &self.sin)).collect();
        let mut out = vec![T::zero(); dm.b * dm.t * dm.out_width()];
        let mut lse = vec![0f64; dm.b * dm.heads * dm.t];
        for (g, (outs, lses)) in groups.into_iter().enumerate() {
            let (bi, kh) = (g / dm.kv_heads, g % dm.kv_heads);
            for (r, (o, l)) in outs.iter().zip(&lses).enumerate() {
                let h = kh * dm.n_rep() + r;
                scatter_head(&mut out, o, bi, dm.q_col(h), dm.t, dm.out_width(), dm.d);
                lse[(bi * dm.heads + h) * dm.t..(bi * dm.heads + h + 1) * dm.t].copy_from_slice(l);
            }
        }
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = lse;
        out
    }

    /// The gradient of the q/k/v rows, laid out like them.
    pub(super) fn backward<T: Float>(&self, qkv: &[T], o: &[T], dout: &[T]) -> Vec<T> {
        let dm = self.dims;
        let lse = self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let groups: Vec<_> = (0..dm.b * dm.kv_heads).into_par_iter().map(|g| backward_group(qkv, o, dout, &lse, dm, g, &self.cos, &self.sin)).collect();
        let mut dqkv = vec![T::zero(); dm.b * dm.t * dm.width()];
        for (g, (dqs, dkg, dvg)) in groups.into_iter().enumerate() {
            let (bi, kh) = (g / dm.kv_heads, g % dm.kv_heads);
            for (r, dqh) in dqs.iter().enumerate() {
                scatter_head(&mut dqkv, dqh, bi, dm.q_col(kh * dm.n_rep() + r), dm.t, dm.width(), dm.d);
            }
            scatter_head(&mut dqkv, &dkg, bi, dm.k_col(kh), dm.t, dm.width(), dm.d);
            scatter_head(&mut dqkv, &dvg, bi, dm.v_col(kh), dm.t, dm.width(), dm.d);
        }
        dqkv
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.forward::<f32>(slice_of(s, l)?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.forward::<f64>(slice_of(s, l)?)),
            _ => candle_core::bail!("causal_attention supports f32 and f64"),
        };
        let dm = self.dims;
        Ok((out, Shape::from((dm.b, dm.t, dm.out_width()))))
    }

    fn bwd(&self, qkv: &Tensor, o: &Tensor, dout: &Tensor) -> candle_core::Result<Option<Tensor>> {
        fn run<T: Float>(op: &CausalAttention, qkv: &Tensor, o: &Tensor, dout: &Tensor) -> candle_core::Result<Tensor> {
            let dqkv = with_slice::<T, _>(qkv, |qkv| with_slice::<T, _>(o, |o| with_slice::<T, _>(dout, |dout| Ok(op.backward(qkv, o, dout)))))?;
            tensor(dqkv, qkv.dims())
        }
        let dqkv = match qkv.dtype() {
            candle_core::DType::F32 => run::<f32>(self, qkv, o, dout)?,
            candle_core::DType::F64 => run::<f64>(self, qkv, o, dout)?,
            dt => candle_core::bail!("causal_attention supports f32 and f64, got {dt:?}"),
        };
        Ok(Some(dqkv))
    }
}
