//! A weight matrix in 8- or 4-bit blocks multiplied with activations rounded to 8 bits, in
//! integer dot products, for generation that trades exactness for speed
//! (`--weights int8-dot`).
//!
//! Why: single-stream decoding reads each weight once and does little with it, so its speed
//! is the instructions spent per weight. The exact path turns every 4-bit weight back into
//! its f32 value before a float multiply-add (about seventeen 512-bit operations per block of
//! 32 weights). llama.cpp instead rounds each block of 32 activations to 8-bit integers with
//! one f32 scale (Q8_0) and multiplies integers: AVX-512 VNNI's `vpdpbusd` does 64 byte
//! products (two blocks) into sixteen 32-bit sums in one instruction, and two blocks cost
//! about ten operations. This module does the same on the model file's own Q4_1 / Q8_0
//! blocks (or a Q8_0 copy of weights that have none). Measured on the Intel Xeon machines:
//! single-stream decoding 45 → 100 tok/s (BENCHMARKS.md, eleventh session).
//!
//! What it computes: `y = W · x̂`, `W` the file's weights exactly and `x̂` the activations
//! rounded per block of 32 (`x̂ = dₓ · qₓ`, `dₓ = max|x| / 127`, `qₓ` the nearest integer):
//! - Q4_1 (`w = d·q + m`): `Σ w·x̂ = d·dₓ·Σ q·qₓ + m·dₓ·Σ qₓ` per block.
//! - Q8_0 (`w = d·q`, `q` signed): stored as `q + 128` (unsigned, as `vpdpbusd` needs), so
//!   `Σ q·qₓ = Σ (q + 128)·qₓ − 128·Σ qₓ`.
//!
//! The integer sums are exact; the per-block scales and sums are f32. Greedy tokens can
//! differ from the exact path's (`bench generate` and `bench eval` measure how many). Each
//! output is the same computation whatever the number of activation rows, so a row's result
//! does not depend on which rows share the product. A LoRA update's term is added in f32,
//! unrounded.

use super::few_rows::{tiled_many, LowRank};
use super::packed::{BlockFormat, PackedRows};

/// Values per block (weights and activations).
const BLOCK: usize = 32;

/// Activation rows dotted with one decoded weight block before the next block is decoded.
const X_GROUP: usize = 4;

/// A `[rows, cols]` matrix in integer blocks with f32 scales, laid out for the dot-product
/// kernel (see the module documentation).
#[derive(Debug, Clone)]
pub struct Int8Rows {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// Q4_1: the file's 16 bytes of nibbles per block; Q8_0: 32 bytes, each `q + 128`.
    quants: Vec<u8>,
    /// `d` of each block, row-major (`rows × cols / 32`).
    scales: Vec<f32>,
    /// `m` of each block (Q4_1 only; empty for Q8_0).
    mins: Vec<f32>,
}

impl Int8Rows {
    /// The file's blocks, repacked (the values unchanged).
    pub fn from_packed(packed: &PackedRows) -> Self {
        let (rows, cols) = packed.dims();
        let format = packed.format();
        let blocks = rows * cols / BLOCK;
        let quant_bytes = quant_bytes(format);
        let mut out = Self { format, rows, cols, quants: Vec::with_capacity(blocks * quant_bytes), scales: Vec::with_capacity(blocks), mins: Vec::new() };
        for block in packed.blocks() {
            out.scales.push(f16_at(block, 0));
            match format {
                BlockFormat::Q4_1 => {
                    out.mins.push(f16_at(block, 2));
                    out.quants.extend_from_slice(&block[4..]);
                }
                BlockFormat::Q8_0 => out.quants.extend(block[2..].iter().map(|&q| q ^ 0x80)),
            }
        }
        out
    }

    /// `weights` (`[rows, cols]`, f32, row-major, `cols` a multiple of 32) rounded to Q8_0
    /// blocks, for weights the model file does not hold in blocks. `None` when `cols` is not
    /// a multiple of 32.
    pub fn from_f32(weights: &[f32], rows: usize, cols: usize) -> Option<Self> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) || weights.len() != rows * cols {
            return None;
        }
        let blocks = rows * cols / BLOCK;
        let mut out = Self { format: BlockFormat::Q8_0, rows, cols, quants: vec![0; rows * cols], scales: vec![0.0; blocks], mins: Vec::new() };
        for ((values, quants), scale) in weights.chunks_exact(BLOCK).zip(out.quants.chunks_exact_mut(BLOCK)).zip(&mut out.scales) {
            let mut signed = [0i8; BLOCK];
            *scale = round_block(values, &mut signed);
            quants.iter_mut().zip(signed).for_each(|(u, q)| *u = q as u8 ^ 0x80);
        }
        Some(out)
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.quants.len() + 4 * (self.scales.len() + self.mins.len())
    }

    /// Rows `lo..hi` as one view for the kernel.
    fn rows(&self, lo: usize, hi: usize) -> WeightRows<'_> {
        let blocks = self.cols / BLOCK;
        let quant_bytes = quant_bytes(self.format);
        WeightRows {
            format: self.format,
            blocks,
            quants: &self.quants[lo * blocks * quant_bytes..hi * blocks * quant_bytes],
            scales: &self.scales[lo * blocks..hi * blocks],
            mins: if self.mins.is_empty() { &[] } else { &self.mins[lo * blocks..hi * blocks] },
        }
    }
}

/// Bytes of integer values per block.
fn quant_bytes(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_1 => BLOCK / 2,
        BlockFormat::Q8_0 => BLOCK,
    }
}

/// A block's f16 field at byte `at`, as f32 (exact).
fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// A run of weight rows' blocks.
struct WeightRows<'a> {
    format: BlockFormat,
    /// Blocks per row.
    blocks: usize,
    quants: &'a [u8],
    scales: &'a [f32],
    /// Empty for Q8_0.
    mins: &'a [f32],
}

impl WeightRows<'_> {
    fn len(&self) -> usize {
        self.scales.len() / self.blocks
    }
}

/// 32 values rounded to integers in −127..=127 with one scale (`max|v| / 127`), as
/// llama.cpp's Q8_0 does; returns the scale (0 for an all-zero block).
fn round_block(values: &[f32], out: &mut [i8; BLOCK]) -> f32 {
    let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (q, v) in out.iter_mut().zip(values) {
        *q = (v * inverse).round() as i8;
    }
    scale
}

/// Activation rows rounded to 8-bit blocks: the kernel's other operand.
pub struct Int8Activations {
    cols: usize,
    /// `qₓ`, row-major.
    quants: Vec<i8>,
    /// `dₓ` of each block.
    scales: Vec<f32>,
    /// `dₓ · Σ qₓ` of each block (what a Q4_1 block's minimum multiplies).
    totals: Vec<f32>,
}

impl Int8Activations {
    /// `x` (`m` rows of `cols` values, `cols` a multiple of 32) rounded per block.
    pub fn round(x: &[f32], m: usize, cols: usize) -> Self {
        assert!(cols.is_multiple_of(BLOCK) && x.len() >= m * cols, "int8 activations: {} values for {m} rows of {cols}", x.len());
        let blocks = m * cols / BLOCK;
        let mut out = Self { cols, quants: vec![0; m * cols], scales: vec![0.0; blocks], totals: vec![0.0; blocks] };
        for (((values, quants), scale), total) in
            x[..m * cols].chunks_exact(BLOCK).zip(out.quants.chunks_exact_mut(BLOCK)).zip(&mut out.scales).zip(&mut out.totals)
        {
            let mut q = [0i8; BLOCK];
            *scale = round_block(values, &mut q);
            *total = *scale * q.iter().map(|&v| i32::from(v)).sum::<i32>() as f32;
            quants.copy_from_slice(&q);
        }
        out
    }

    /// The rounded values `dₓ · qₓ` of row `i`, for checking the product against them.
    #[cfg(test)]
    fn rounded_row(&self, i: usize) -> Vec<f32> {
        let row = &self.quants[i * self.cols..(i + 1) * self.cols];
        row.chunks_exact(BLOCK).zip(&self.scales[i * self.cols / BLOCK..]).flat_map(|(q, &d)| q.iter().map(move |&v| f32::from(v) * d)).collect()
    }

    /// Row `i`'s view for the kernel.
    fn row(&self, i: usize) -> ActivationRow<'_> {
        let blocks = self.cols / BLOCK;
        let range = i * blocks..(i + 1) * blocks;
        ActivationRow { quants: &self.quants[i * self.cols..(i + 1) * self.cols], scales: &self.scales[range.clone()], totals: &self.totals[range] }
    }
}

/// One activation row's blocks.
#[derive(Clone, Copy)]
struct ActivationRow<'a> {
    quants: &'a [i8],
    scales: &'a [f32],
    totals: &'a [f32],
}

/// Whether this CPU has the integer dot-product instruction the fast kernel uses (without
/// it a portable loop computes the same integer sums, more slowly).
pub fn dot_product_available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `y[m, n] = x̂[m, k] · w[n, k]ᵀ (+ the low-rank term)` with `x` rounded to 8-bit blocks,
/// the weight rows split across rayon's threads. Callers check the few-rows kernels are
/// available (the low-rank term uses them).
#[cfg(test)]
fn matmul_t(m: usize, x: &[f32], w: &Int8Rows, low_rank: Option<LowRank<'_>>) -> Vec<f32> {
    matmul_t_many(m, x, &[(w, low_rank)]).pop().expect("one product")
}

/// [`matmul_t`] for several weights of the same width applied to the same `x`, in one
/// parallel region (one fork and join for q, k and v).
pub fn matmul_t_many(m: usize, x: &[f32], products: &[(&Int8Rows, Option<LowRank<'_>>)]) -> Vec<Vec<f32>> {
    let Some(k) = products.first().map(|(w, _)| w.dims().1) else { return Vec::new() };
    assert!(products.iter().all(|(w, _)| w.dims().1 == k), "int8 matmul: products of different widths");
    let acts = Int8Activations::round(x, m, k);
    let fast = dot_product_available();
    let shapes: Vec<(usize, Option<LowRank<'_>>)> = products.iter().map(|(w, l)| (w.dims().0, *l)).collect();
    tiled_many(m, &shapes, |p, lo, hi, tile| {
        let rows = products[p].0.rows(lo, hi);
        for i0 in (0..m).step_by(X_GROUP) {
            let group = (m - i0).min(X_GROUP);
            let xs: [ActivationRow<'_>; X_GROUP] = std::array::from_fn(|g| acts.row(i0 + g.min(group - 1)));
            let out = &mut tile[i0 * (hi - lo)..];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: `fast` is `dot_product_available()`; the weight and activation rows
                // hold `k / 32` blocks each; `out` holds `group` rows of `hi - lo`.
                unsafe { avx512::dots(&rows, &xs[..group], out, hi - lo) };
                continue;
            }
            let _ = fast;
            dots_portable(&rows, &xs[..group], out, hi - lo);
        }
    })
}

/// `Σ_b v_b · dₓ_b · Σ qₓ_b` over a row's blocks: with Q4_1's minimums, their share of the
/// product; with Q8_0's scales (times −128), the `+128` offset the fast kernel takes off.
#[inline(always)]
fn minimum_term(mins: &[f32], x: &ActivationRow<'_>) -> f32 {
    // Eight running sums, so the loop vectorizes, added in a fixed order at the end.
    let mut lanes = [0f32; 8];
    let (mins, totals) = (mins.chunks_exact(8), x.totals[..mins.len()].chunks_exact(8));
    let tail = mins.remainder().iter().zip(totals.remainder()).map(|(m, t)| m * t).sum::<f32>();
    for (m, t) in mins.zip(totals) {
        for (lane, (m, t)) in lanes.iter_mut().zip(m.iter().zip(t)) {
            *lane += m * t;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The portable form of the kernel: the same integer sums, summed in f32 per block;
/// `out[g · stride + r]` = weight row `r` · activation row `g`.
fn dots_portable(rows: &WeightRows<'_>, xs: &[ActivationRow<'_>], out: &mut [f32], stride: usize) {
    let nb = rows.blocks;
    for r in 0..rows.len() {
        for (g, x) in xs.iter().enumerate() {
            let mut acc = 0f32;
            for b in 0..nb {
                let qx = &x.quants[b * BLOCK..(b + 1) * BLOCK];
                let block = r * nb + b;
                let dot: i32 = match rows.format {
                    BlockFormat::Q4_1 => {
                        let q = &rows.quants[block * BLOCK / 2..(block + 1) * BLOCK / 2];
                        q.iter().enumerate().map(|(j, &v)| i32::from(v & 0x0F) * i32::from(qx[j]) + i32::from(v >> 4) * i32::from(qx[j + BLOCK / 2])).sum()
                    }
                    BlockFormat::Q8_0 => {
                        let q = &rows.quants[block * BLOCK..(block + 1) * BLOCK];
                        q.iter().zip(qx).map(|(&u, &v)| i32::from(u as i8 ^ i8::MIN) * i32::from(v)).sum()
                    }
                };
                acc += dot as f32 * (rows.scales[block] * x.scales[b]);
            }
            let mins = if rows.mins.is_empty() { &[][..] } else { &rows.mins[r * nb..(r + 1) * nb] };
            out[g * stride + r] = acc + minimum_term(mins, x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{minimum_term, ActivationRow, BlockFormat, WeightRows, BLOCK};

    /// Weight rows multiplied together (independent accumulator chains, one pass of
    /// per-row overhead for several rows).
    const W_GROUP: usize = 4;

    /// Every row of `rows` · each of `xs` (at most [`super::X_GROUP`] rows):
    /// `out[g · stride + r]`. Each block's 32 weights are widened once to unsigned bytes
    /// (Q4_1's nibbles split into values 0–15 and 16–31), `vpdpbusd` with each activation
    /// row's bytes into eight 32-bit sums, converted to f32 and multiplied into f32 lanes by
    /// `d·dₓ`; the lanes summed at the end.
    ///
    /// # Safety
    /// AVX-512F/VL/BW and VNNI must be available; every row holds `rows.blocks` blocks.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vnni")]
    pub(super) unsafe fn dots(rows: &WeightRows<'_>, xs: &[ActivationRow<'_>], out: &mut [f32], stride: usize) {
        let n = rows.len();
        let mut r = 0;
        while r < n {
            let w = if n - r >= W_GROUP { W_GROUP } else { 1 };
            // The format and the row counts as constants, so the accumulators stay in
            // registers and the loop carries no branches.
            match (rows.format, xs.len(), w) {
                (BlockFormat::Q4_1, 1, W_GROUP) => group::<true, 1, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, 2, W_GROUP) => group::<true, 2, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, 3, W_GROUP) => group::<true, 3, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, _, W_GROUP) => group::<true, 4, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, 1, _) => group::<true, 1, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, 2, _) => group::<true, 2, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, 3, _) => group::<true, 3, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q4_1, _, _) => group::<true, 4, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, 1, W_GROUP) => group::<false, 1, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, 2, W_GROUP) => group::<false, 2, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, 3, W_GROUP) => group::<false, 3, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, _, W_GROUP) => group::<false, 4, W_GROUP>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, 1, _) => group::<false, 1, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, 2, _) => group::<false, 2, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, 3, _) => group::<false, 3, 1>(rows, r, xs, out, stride),
                (BlockFormat::Q8_0, _, _) => group::<false, 4, 1>(rows, r, xs, out, stride),
            }
            r += w;
        }
    }

    /// [`dots`] for weight rows `r0..r0 + W` and `G` activation rows, Q4_1 (`Q4`) or Q8_0:
    /// two blocks per 512-bit step (a row's blocks are adjacent), an odd last block in a
    /// 256-bit one. Q8_0's `+128` offset is taken off after the loop, with Q4_1's minimums:
    /// `Σ (q + 128)·qₓ·d·dₓ − 128·Σ d·dₓ·Σ qₓ`.
    #[inline(always)]
    unsafe fn group<const Q4: bool, const G: usize, const W: usize>(
        rows: &WeightRows<'_>,
        r0: usize,
        xs: &[ActivationRow<'_>],
        out: &mut [f32],
        stride: usize,
    ) {
        let xs: &[ActivationRow<'_>; G] = xs.try_into().expect("G activation rows");
        let nb = rows.blocks;
        let mut acc = [[_mm512_setzero_ps(); G]; W];
        let mut last = [[_mm256_setzero_ps(); G]; W];
        // 128-bit lanes [p0, p0, p1, p1] of two blocks' 16 nibble bytes p0, p1, shifted by
        // [0, 4, 0, 4] bits: low nibbles then high ones, the values in column order.
        let spread = _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0);
        let shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
        let low_nibbles = _mm512_set1_epi8(0x0F);
        // Lanes 0–7 take the first block's scale, 8–15 the second's.
        let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let pairs = nb / 2;
        for p in 0..pairs {
            let b = 2 * p;
            let qx: [__m512i; G] = std::array::from_fn(|g| _mm512_loadu_si512(xs[g].quants.as_ptr().add(b * BLOCK).cast()));
            let dx: [__m128; G] = std::array::from_fn(|g| _mm_castpd_ps(_mm_load_sd(xs[g].scales.as_ptr().add(b).cast())));
            for (r, acc) in acc.iter_mut().enumerate() {
                let block = (r0 + r) * nb + b;
                let w = if Q4 {
                    let packed = _mm512_castsi256_si512(_mm256_loadu_si256(rows.quants.as_ptr().add(block * BLOCK / 2).cast()));
                    _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutexvar_epi64(spread, packed), shifts), low_nibbles)
                } else {
                    _mm512_loadu_si512(rows.quants.as_ptr().add(block * BLOCK).cast())
                };
                let d = _mm_castpd_ps(_mm_load_sd(rows.scales.as_ptr().add(block).cast()));
                for g in 0..G {
                    let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, qx[g]);
                    let scale = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_mul_ps(d, dx[g])));
                    acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[g]);
                }
            }
        }
        if nb % 2 == 1 {
            let b = nb - 1;
            let low_nibbles = _mm256_set1_epi8(0x0F);
            for (r, last) in last.iter_mut().enumerate() {
                let block = (r0 + r) * nb + b;
                let w = if Q4 {
                    let packed = _mm_loadu_si128(rows.quants.as_ptr().add(block * BLOCK / 2).cast());
                    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low_nibbles)
                } else {
                    _mm256_loadu_si256(rows.quants.as_ptr().add(block * BLOCK).cast())
                };
                let d = *rows.scales.get_unchecked(block);
                for (g, x) in xs.iter().enumerate() {
                    let qx = _mm256_loadu_si256(x.quants.as_ptr().add(b * BLOCK).cast());
                    let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, qx);
                    last[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * *x.scales.get_unchecked(b)), last[g]);
                }
            }
        }
        for (r, (acc, last)) in acc.iter().zip(&last).enumerate() {
            let row = (r0 + r) * nb..(r0 + r + 1) * nb;
            for (g, ((a, l), x)) in acc.iter().zip(last).zip(xs).enumerate() {
                let halves = _mm256_add_ps(_mm512_castps512_ps256(*a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*a), 1)));
                let products = super::super::few_rows::hsum256(_mm256_add_ps(halves, *l));
                let offsets = if Q4 { minimum_term(&rows.mins[row.clone()], x) } else { -128.0 * minimum_term(&rows.scales[row.clone()], x) };
                out[g * stride + r0 + r] = products + offsets;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;

    /// Random-ish `[rows, cols]` weights quantized by candle, as the model file's blocks and
    /// as their exact f32 values.
    fn file_blocks(dtype: GgmlDType, rows: usize, cols: usize) -> (PackedRows, Vec<f32>) {
        let values: Vec<f32> = (0..rows * cols).map(|i| (((i * 37 + 11) % 101) as f32 - 50.0) / 40.0).collect();
        let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let exact = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (PackedRows::from_gguf(dtype, &q.data().unwrap(), rows, cols).unwrap(), exact)
    }

    fn activations(m: usize, k: usize) -> Vec<f32> {
        (0..m * k).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0 + if i % 97 == 0 { 3.5 } else { 0.0 }).collect()
    }

    /// `W · x̂` in f64 from the exact weights and the rounded activations.
    fn reference(w: &[f32], acts: &Int8Activations, m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            let xr = acts.rounded_row(i);
            for j in 0..n {
                y[i * n + j] = (0..k).map(|q| w[j * k + q] as f64 * xr[q] as f64).sum();
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len());
        for (idx, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}: y[{idx}] = {g}, want {w}");
        }
    }

    #[test]
    fn the_product_is_the_file_weights_times_the_rounded_activations() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            // Odd block counts (96, 608) take the kernel's last-block path.
            for (m, n, k) in [(1, 70, 576), (3, 9, 64), (2, 11, 96), (6, 130, 1536), (5, 6, 608)] {
                let (packed, exact) = file_blocks(dtype, n, k);
                let x = activations(m, k);
                let y = matmul_t(m, &x, &Int8Rows::from_packed(&packed), None);
                assert_close(&y, &reference(&exact, &Int8Activations::round(&x, m, k), m, n, k), &format!("{dtype:?} {m}×{n}×{k}"));
            }
        }
    }

    #[test]
    fn the_portable_loop_matches_the_kernel() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (n, m) = (7, 3);
            let (packed, _) = file_blocks(dtype, n, 576);
            let w = Int8Rows::from_packed(&packed);
            let x = activations(m, 576);
            let acts = Int8Activations::round(&x, m, 576);
            let xs = [acts.row(0), acts.row(1), acts.row(2)];
            let mut portable = vec![0f32; m * n];
            dots_portable(&w.rows(0, n), &xs, &mut portable, n);
            let fast = matmul_t(m, &x, &w, None);
            for (i, (p, f)) in portable.iter().zip(&fast).enumerate() {
                assert!((p - f).abs() <= 1e-5 * (1.0 + f.abs()), "{dtype:?} y[{i}]: {p} vs {f}");
            }
        }
    }

    #[test]
    fn a_row_s_result_does_not_depend_on_how_many_rows_share_the_product() {
        let (packed, _) = file_blocks(GgmlDType::Q4_1, 70, 576);
        let w = Int8Rows::from_packed(&packed);
        let x = activations(7, 576);
        let all = matmul_t(7, &x, &w, None);
        for i in 0..7 {
            assert_eq!(matmul_t(1, &x[i * 576..(i + 1) * 576], &w, None), all[i * 70..(i + 1) * 70], "row {i}");
        }
    }

    #[test]
    fn rounding_costs_little_against_the_exact_product() {
        let (n, k) = (64, 576);
        let (packed, exact) = file_blocks(GgmlDType::Q4_1, n, k);
        let x = activations(1, k);
        let y = matmul_t(1, &x, &Int8Rows::from_packed(&packed), None);
        let norm: f64 = (0..n).map(|j| (0..k).map(|q| (exact[j * k + q] * x[q]) as f64).sum::<f64>().powi(2)).sum::<f64>().sqrt();
        let err: f64 = (0..n).map(|j| (y[j] as f64 - (0..k).map(|q| (exact[j * k + q] * x[q]) as f64).sum::<f64>()).powi(2)).sum::<f64>().sqrt();
        assert!(err < 0.01 * norm, "relative error {}", err / norm);
    }

    #[test]
    fn weights_without_blocks_round_to_q8_0_and_the_low_rank_term_is_added() {
        let (n, k, r) = (10, 64, 2);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7 % 19) as f32 - 9.0) / 5.0).collect();
        let rows = Int8Rows::from_f32(&w, n, k).unwrap();
        assert!(Int8Rows::from_f32(&w, n * 2, k / 2 + 1).is_none());
        // Q8_0 rounding of the weights: each value within half a step of its block's scale.
        for (b, block) in w.chunks_exact(BLOCK).enumerate() {
            let d = rows.scales[b];
            for (v, u) in block.iter().zip(&rows.quants[b * BLOCK..]) {
                assert!((f32::from((u ^ 0x80) as i8) * d - v).abs() <= 0.5 * d + 1e-6);
            }
        }
        let x = activations(2, k);
        let t = [0.5f32, -1.0, 2.0, 0.25];
        let b: Vec<f32> = (0..n * r).map(|i| i as f32 / 10.0).collect();
        let plain = matmul_t(2, &x, &rows, None);
        let with = matmul_t(2, &x, &rows, Some(LowRank { t: &t, b: &b, rank: r }));
        for i in 0..2 {
            for j in 0..n {
                let term = t[i * r] * b[j * r] + t[i * r + 1] * b[j * r + 1];
                assert!((with[i * n + j] - plain[i * n + j] - term).abs() < 1e-4, "[{i},{j}]");
            }
        }
    }
}
