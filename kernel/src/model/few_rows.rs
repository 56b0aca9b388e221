//! `y = x · Wᵀ` for a few rows of `x` (decoding steps), reading each weight row once.
//!
//! Why: a decoding step multiplies 1–64 activation rows by every weight matrix. The `gemm`
//! crate's blocked kernels are built for many rows; at 32 rows they reached 40–55 GFLOP/s
//! on the projections and 42 on the 49152-row output head (2.6 GB/s of weights, so a step
//! took 175 ms). Here each block of four weight rows stays in L1 while every activation row
//! is dotted with it, in 4 × 6 blocks of AVX-512 FMA accumulators (4 × 3 of AVX2 on CPUs
//! without AVX-512), the weight rows split across rayon's threads.
//!
//! Each output is the same 16-lane (8-lane on AVX2) dot product whatever `m` is, so a row's
//! result does not depend on how many rows share the product: batched decoding equals one
//! sequence at a time on a given machine.

use super::fused::SendPtr;
use super::packed::PackedRows;

/// Most rows of `x` this kernel takes; more rows go to the blocked GEMM.
pub const MAX_ROWS: usize = 64;

/// Packed weight rows dequantized at a time (the kernel's weight block height).
const PACKED_GROUP: usize = 4;

/// Weight rows per unit of parallel work.
const ROWS_PER_TASK: usize = 64;

/// Whether this CPU runs the kernel (x86-64 with AVX2 and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 kernel runs (16-lane accumulators, 4 × 6 blocks); else the AVX2 one.
/// `TUNELAB_FEW_ROWS_AVX2=1` forces the AVX2 kernel (for comparing the two).
fn avx512_available() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f") && std::env::var_os("TUNELAB_FEW_ROWS_AVX2").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` (all row-major, tightly packed). Callers check
/// [`available`] first.
pub fn matmul_t(m: usize, n: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
    matmul_t_dense_many(m, k, x, &[(w, n)]).pop().expect("one product")
}

/// [`matmul_t`] for several dense weights of the same activation rows (`(w, n)` each: `n`
/// rows of width `k`) in one parallel region, so small products (a LoRA update's `x·Aᵀ` for
/// q, k and v) read their weights from memory side by side instead of one after another.
pub fn matmul_t_dense_many(m: usize, k: usize, x: &[f32], weights: &[(&[f32], usize)]) -> Vec<Vec<f32>> {
    for &(w, n) in weights {
        assert!(w.len() >= n * k, "few-rows matmul: weights smaller than {n}×{k}");
    }
    assert!(x.len() >= m * k, "few-rows matmul: activations smaller than {m}×{k}");
    assert!(available(), "few-rows matmul needs AVX2 and FMA");
    let wide = avx512_available();
    let shapes: Vec<(usize, Option<LowRank<'_>>)> = weights.iter().map(|&(_, n)| (n, None)).collect();
    tiled_many(m, &shapes, |p, lo, hi, tile| fill_columns(m, k, x, Weights::Dense(weights[p].0), wide, lo, hi, tile))
}

/// A LoRA update's term added to a product's output rows: `y[i, j] += t[i, :] · B[j, :]`
/// with `t = scale · x·Aᵀ` `[m, r]` (computed once) and `B` `[n, r]`. Each task adds it to
/// its own output columns, so the update runs in parallel with no transposed copy of `B`.
#[derive(Clone, Copy)]
pub struct LowRank<'a> {
    /// `scale · x·Aᵀ`, `[m, r]`.
    pub t: &'a [f32],
    /// `B`, `[n, r]`.
    pub b: &'a [f32],
    /// The rank `r`.
    pub rank: usize,
}

impl LowRank<'_> {
    /// Adds the term to `tile` `[m, hi - lo]`, output columns `lo..hi` (compiled for AVX2
    /// and FMA, which this module's kernels need anyway).
    fn add_to(&self, tile: &mut [f32], lo: usize, hi: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the few-rows kernels run only where `available` found AVX2 and FMA.
        unsafe {
            self.add_to_avx2(tile, lo, hi)
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.add_to_portable(tile, lo, hi)
    }

    /// Asks for the `B` rows of output columns `lo..hi` to be brought into cache, so they
    /// arrive while the task's main product runs (they are read once per step, long after
    /// the step's weights pushed them out; waiting for them was most of this term's time).
    fn prefetch(&self, lo: usize, hi: usize) {
        #[cfg(target_arch = "x86_64")]
        for line in self.b[lo * self.rank..hi * self.rank].chunks(16) {
            // SAFETY: prefetching is a hint; the address lies inside `b`.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
        }
    }

    /// Each output's rank-long dot product eight lanes at a time (one 256-bit load of its
    /// `B` row, one horizontal sum), so the outputs' loads and sums overlap; the scalar loop
    /// was a chain of dependent adds per output that stalled on every `B` row from memory.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_to_avx2(&self, tile: &mut [f32], lo: usize, hi: usize) {
        use std::arch::x86_64::*;
        let r = self.rank;
        let lanes = r / 8 * 8;
        if lanes == 0 {
            return self.add_to_portable(tile, lo, hi);
        }
        for (row, t) in tile.chunks_exact_mut(hi - lo).zip(self.t.chunks_exact(r)) {
            for (y, b) in row.iter_mut().zip(self.b[lo * r..hi * r].chunks_exact(r)) {
                let mut acc = _mm256_mul_ps(_mm256_loadu_ps(t.as_ptr()), _mm256_loadu_ps(b.as_ptr()));
                for c in (8..lanes).step_by(8) {
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(t.as_ptr().add(c)), _mm256_loadu_ps(b.as_ptr().add(c))));
                }
                let mut sum = hsum256(acc);
                for q in lanes..r {
                    sum += t[q] * b[q];
                }
                *y += sum;
            }
        }
    }

    #[inline(always)]
    fn add_to_portable(&self, tile: &mut [f32], lo: usize, hi: usize) {
        let r = self.rank;
        for (row, t) in tile.chunks_exact_mut(hi - lo).zip(self.t.chunks_exact(r)) {
            for (y, b) in row.iter_mut().zip(self.b[lo * r..hi * r].chunks_exact(r)) {
                *y += t.iter().zip(b).map(|(t, b)| t * b).sum::<f32>();
            }
        }
    }
}

/// Where a product's weight rows come from.
#[derive(Clone, Copy)]
enum Weights<'a> {
    Dense(&'a [f32]),
    Packed(&'a PackedRows),
}

thread_local! {
    /// Per-thread scratch for rows dequantized from packed blocks.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ its low-rank term)` for each product, `w` in quantized
/// blocks, in one parallel region (one fork and join for q, k and v): each task turns its
/// weight rows back into f32 (exactly the dense values) in a scratch buffer that stays in
/// cache, so each result equals [`matmul_t`] on the dense weights bit for bit, while memory
/// traffic is the blocks' bytes. Callers check [`available`] first.
pub fn matmul_t_packed_many(m: usize, x: &[f32], products: &[(&PackedRows, Option<LowRank<'_>>)]) -> Vec<Vec<f32>> {
    let Some(k) = products.first().map(|(w, _)| w.dims().1) else { return Vec::new() };
    assert!(products.iter().all(|(w, _)| w.dims().1 == k), "few-rows matmul: products of different widths");
    assert!(x.len() >= m * k, "few-rows matmul: activations smaller than {m}×{k}");
    assert!(available(), "few-rows matmul needs AVX2 and FMA");
    let wide = avx512_available();
    let shapes: Vec<(usize, Option<LowRank<'_>>)> = products.iter().map(|(w, l)| (w.dims().0, *l)).collect();
    tiled_many(m, &shapes, |p, lo, hi, tile| fill_columns(m, k, x, Weights::Packed(products[p].0), wide, lo, hi, tile))
}

/// One task's products: `tile[i, j - lo] = x[i, :] · w[j, :]` for weight rows `lo..hi`
/// (`tile` `[m, hi - lo]`), by the AVX-512 kernel where `wide`, else the AVX2 one.
#[allow(clippy::too_many_arguments)]
fn fill_columns(m: usize, k: usize, x: &[f32], w: Weights<'_>, wide: bool, lo: usize, hi: usize, tile: &mut [f32]) {
    let stride = hi - lo;
    // `tile[i, j] = x[i, :] · w[j, :]` for `m` rows of `x` and the weight rows `w`.
    let columns_of = |m: usize, x: &[f32], w: &[f32], tile: &mut [f32]| {
        // SAFETY: the callers asserted AVX2 and FMA, AVX-512F where `wide`; `x` holds m×k
        // elements; `tile` holds m rows `stride` apart with room for `w`'s rows.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if wide {
                avx512::columns(m, k, x, w, tile, stride)
            } else {
                avx2::columns(m, k, x, w, tile, stride)
            }
        }
    };
    let columns = |w: &[f32], tile: &mut [f32]| columns_of(m, x, w, tile);
    match w {
        Weights::Dense(w) => columns(&w[lo * k..hi * k], tile),
        // One activation row (single-stream decoding): dequantized in registers.
        Weights::Packed(p) if m == 1 && wide && p.dot_rows(lo, hi, &x[..k], tile) => {}
        // A prompt pass of many rows: the task's weight rows dequantized once (at most
        // 384 KiB, in L2), then multiplied with the rows MAX_ROWS at a time, each pair's
        // dot product the same as in a pass of few rows. (Dequantizing again for each
        // MAX_ROWS rows read the step's ~114 MB of blocks from memory each time.)
        Weights::Packed(p) if m > MAX_ROWS => SCRATCH.with_borrow_mut(|scratch| {
            scratch.resize((hi - lo) * k, 0.0);
            p.dequantize_rows(lo, hi, scratch);
            for first in (0..m).step_by(MAX_ROWS) {
                let rows = (m - first).min(MAX_ROWS);
                columns_of(rows, &x[first * k..(first + rows) * k], scratch, &mut tile[first * stride..]);
            }
        }),
        // Four rows at a time (at most 24 KiB of f32), so the dequantized rows are still
        // in L1 when the kernel reads them.
        Weights::Packed(p) => SCRATCH.with_borrow_mut(|scratch| {
            for g in (lo..hi).step_by(PACKED_GROUP) {
                let end = (g + PACKED_GROUP).min(hi);
                scratch.resize((end - g) * k, 0.0);
                p.dequantize_rows(g, end, scratch);
                columns(scratch, &mut tile[g - lo..]);
            }
        }),
    }
}

/// `y[m, n]` for several products of the same activation rows (`(n, low-rank term)` each),
/// filled by parallel tasks, each owning the output columns `lo..hi` of one run of
/// [`ROWS_PER_TASK`] weight rows of one product: `fill(p, lo, hi, tile)` writes product `p`'s
/// values into `tile` (`[m, hi - lo]`, row-major), then the low-rank term is added and the
/// tile copied into `y`. One parallel region covers every product, so a decoding step pays
/// one fork and join for q, k and v together.
pub(super) fn tiled_many(m: usize, products: &[(usize, Option<LowRank<'_>>)], fill: impl Fn(usize, usize, usize, &mut [f32]) + Sync) -> Vec<Vec<f32>> {
    for &(n, low_rank) in products {
        if let Some(l) = low_rank {
            assert!(l.t.len() >= m * l.rank && l.b.len() >= n * l.rank, "few-rows matmul: low-rank term smaller than {m}×{0} and {n}×{0}", l.rank);
        }
    }
    let mut ys: Vec<Vec<f32>> = products.iter().map(|&(n, _)| vec![0f32; m * n]).collect();
    let outs: Vec<SendPtr<f32>> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
    let tasks: Vec<(usize, usize)> = products.iter().enumerate().flat_map(|(p, &(n, _))| (0..n.div_ceil(ROWS_PER_TASK)).map(move |t| (p, t))).collect();
    super::team::for_each(tasks.len(), |t| {
        let (p, task) = tasks[t];
        let (n, low_rank) = products[p];
        let (lo, hi) = (task * ROWS_PER_TASK, ((task + 1) * ROWS_PER_TASK).min(n));
        // The task's columns, [m, hi - lo], then copied row by row: writing y directly would
        // touch m far-apart rows (one page each for the 49152-wide output head) per block.
        let mut tile = vec![0f32; m * (hi - lo)];
        if let Some(l) = low_rank {
            l.prefetch(lo, hi);
        }
        fill(p, lo, hi, &mut tile);
        if let Some(l) = low_rank {
            l.add_to(&mut tile, lo, hi);
        }
        for (i, row) in tile.chunks_exact(hi - lo).enumerate() {
            // SAFETY: row i's columns lo..hi lie inside product p's y and belong to this
            // task alone.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), outs[p].get().add(i * n + lo), hi - lo) };
        }
    });
    ys
}

/// One ISA's kernel: `columns` over blocks of 4 weight rows × `X_BLOCK` activation rows of
/// `LANES`-wide FMA accumulators. The AVX2 and AVX-512 kernels differ only in their vector type,
/// intrinsics and block height, so both come from this one definition.
#[cfg(target_arch = "x86_64")]
macro_rules! few_rows_kernel {
    ($isa:ident, $features:literal, $vec:ty, $lanes:literal, [$($height:literal),+], $zero:ident, $load:ident, $fma:ident, $hsum:path) => {
        pub(super) mod $isa {
            use std::arch::x86_64::*;

            /// Activation rows per register block (4 weight rows × `X_BLOCK` activation rows
            /// of accumulators, plus one vector per activation row and one weight vector).
            const X_BLOCK: usize = [$($height),+].len();

            /// `tile[i, j] = x[i, :] · w[j, :]` for `x` `[m, k]` and `w`'s `n` rows, `tile`'s
            /// rows `stride` apart (`stride ≥ n`).
            ///
            /// # Safety
            /// The target features named in `#[target_feature]` must be available.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn columns(m: usize, k: usize, x: &[f32], w: &[f32], tile: &mut [f32], stride: usize) {
                let n = w.len() / k;
                let mut j = 0;
                while j < n {
                    let wr = (n - j).min(4);
                    let mut i = 0;
                    while i < m {
                        let xr = (m - i).min(X_BLOCK);
                        let mut acc = [[0f32; X_BLOCK]; 4];
                        if wr == 4 {
                            block_of::<4>(xr, k, x, w, i, j, &mut acc);
                        } else {
                            for (r, row) in acc.iter_mut().enumerate().take(wr) {
                                let mut one = [[0f32; X_BLOCK]; 4];
                                block_of::<1>(xr, k, x, w, i, j + r, &mut one);
                                *row = one[0];
                            }
                        }
                        for (r, row) in acc.iter().enumerate().take(wr) {
                            for (c, v) in row.iter().enumerate().take(xr) {
                                tile[(i + c) * stride + j + r] = *v;
                            }
                        }
                        i += xr;
                    }
                    j += wr;
                }
            }

            /// [`block`] with the activation-row count `xr` (1..=X_BLOCK) made a constant.
            #[inline(always)]
            unsafe fn block_of<const W: usize>(xr: usize, k: usize, x: &[f32], w: &[f32], i: usize, j: usize, out: &mut [[f32; X_BLOCK]; 4]) {
                match xr {
                    $($height => block::<W, $height>(k, x, w, i, j, out),)+
                    _ => unreachable!("block height {xr} above {X_BLOCK}"),
                }
            }

            /// Dot products of weight rows `j..j + W` with activation rows `i..i + X`.
            #[inline(always)]
            unsafe fn block<const W: usize, const X: usize>(k: usize, x: &[f32], w: &[f32], i: usize, j: usize, out: &mut [[f32; X_BLOCK]; 4]) {
                let mut acc: [[$vec; X]; W] = [[$zero(); X]; W];
                let xp: [*const f32; X] = std::array::from_fn(|c| x.as_ptr().add((i + c) * k));
                let wp: [*const f32; W] = std::array::from_fn(|r| w.as_ptr().add((j + r) * k));
                let vk = k / $lanes * $lanes;
                let mut p = 0;
                while p < vk {
                    let xv: [$vec; X] = std::array::from_fn(|c| $load(xp[c].add(p)));
                    for r in 0..W {
                        let wv = $load(wp[r].add(p));
                        for c in 0..X {
                            acc[r][c] = $fma(wv, xv[c], acc[r][c]);
                        }
                    }
                    p += $lanes;
                }
                for r in 0..W {
                    for c in 0..X {
                        let mut s = $hsum(acc[r][c]);
                        for q in vk..k {
                            s += *wp[r].add(q) * *xp[c].add(q);
                        }
                        out[r][c] = s;
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
few_rows_kernel!(avx2, "avx2,fma", __m256, 8, [1, 2, 3], _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, super::hsum256);
// 4 × 6 accumulators + 6 activation vectors + 1 weight vector: 31 of AVX-512's 32 registers.
#[cfg(target_arch = "x86_64")]
few_rows_kernel!(avx512, "avx512f", __m512, 16, [1, 2, 3, 4, 5, 6], _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_reduce_add_ps);

/// Sum of an AVX register's eight lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    type Kernel = unsafe fn(usize, usize, &[f32], &[f32], &mut [f32], usize);

    /// The kernels this CPU runs: AVX2 always, AVX-512 where present.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        assert!(available(), "the machines tunelab supports have AVX2 and FMA");
        let mut kernels: Vec<(&'static str, Kernel)> = vec![("avx2", avx2::columns)];
        if std::arch::is_x86_feature_detected!("avx512f") {
            kernels.push(("avx512", avx512::columns));
        }
        kernels
    }

    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let w = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        (x, w)
    }

    #[test]
    fn each_kernel_equals_the_naive_product_on_every_remainder() {
        for (name, kernel) in kernels() {
            for (m, n, k) in [(1, 1, 1), (3, 7, 13), (2, 130, 64), (5, 4, 576), (7, 5, 40), (33, 67, 19), (64, 9, 1536)] {
                let (x, w) = operands(m, n, k);
                let mut y = vec![f32::NAN; m * n];
                // SAFETY: `kernels` lists only kernels this CPU runs; sizes as documented.
                unsafe { kernel(m, k, &x, &w, &mut y, n) };
                for a in 0..m {
                    for b in 0..n {
                        let want: f64 = (0..k).map(|q| x[a * k + q] as f64 * w[b * k + q] as f64).sum();
                        let got = y[a * n + b] as f64;
                        assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{name} ({m},{n},{k}) y[{a},{b}] = {got}, want {want}");
                    }
                }
            }
        }
        let (x, w) = operands(9, 130, 576);
        assert_eq!(matmul_t(9, 130, 576, &x, &w).len(), 9 * 130);
    }

    #[test]
    fn the_low_rank_term_adds_each_row_s_bottleneck_times_b_for_every_rank() {
        for rank in [1, 4, 8, 12, 16, 24] {
            let (m, n, lo, hi) = (3, 100, 20, 84);
            let (t, b) = operands(m, n, rank);
            let l = LowRank { t: &t, b: &b, rank };
            let mut tile: Vec<f32> = (0..m * (hi - lo)).map(|i| i as f32 / 7.0).collect();
            let before = tile.clone();
            l.add_to(&mut tile, lo, hi);
            for i in 0..m {
                for j in lo..hi {
                    let term: f64 = (0..rank).map(|q| t[i * rank + q] as f64 * b[j * rank + q] as f64).sum();
                    let (got, want) = (tile[i * (hi - lo) + j - lo] as f64, before[i * (hi - lo) + j - lo] as f64 + term);
                    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "rank {rank}, y[{i},{j}] = {got}, want {want}");
                }
            }
        }
    }

    /// A prompt pass of many rows over the file's blocks (the weights dequantized once per
    /// task) gives each row exactly what a pass of at most `MAX_ROWS` rows gives it.
    #[test]
    fn many_rows_over_packed_blocks_equal_passes_of_few_rows_bit_for_bit() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let (m, n, k) = (150, 70, 96);
        let (x, w) = operands(m, n, k);
        let q = QTensor::quantize(&candle_core::Tensor::from_vec(w, (n, k), &candle_core::Device::Cpu).unwrap(), GgmlDType::Q4_1).unwrap();
        let packed = PackedRows::from_gguf(GgmlDType::Q4_1, &q.data().unwrap(), n, k).expect("packs");
        let all = matmul_t_packed_many(m, &x, &[(&packed, None)]).remove(0);
        for first in (0..m).step_by(MAX_ROWS) {
            let rows = (m - first).min(MAX_ROWS);
            let few = matmul_t_packed_many(rows, &x[first * k..(first + rows) * k], &[(&packed, None)]).remove(0);
            let differing = few.iter().zip(&all[first * n..(first + rows) * n]).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "rows {first}.. of {m}");
        }
    }

    #[test]
    fn a_row_s_result_does_not_depend_on_how_many_rows_share_the_product() {
        let (m, n, k) = (29, 70, 576);
        let (x, w) = operands(m, n, k);
        let all = matmul_t(m, n, k, &x, &w);
        for a in 0..m {
            let alone = matmul_t(1, n, k, &x[a * k..(a + 1) * k], &w);
            assert_eq!(alone, all[a * n..(a + 1) * n], "row {a}");
        }
    }
}
