//! `y = x · Wᵀ` for a few rows of `x` (decoding steps), reading each weight row once.
//!
//! Why: a decoding step multiplies 1–64 activation rows by every weight matrix. The `gemm`
//! crate's blocked kernels are built for many rows; at 32 rows they reached 40–55 GFLOP/s
//! on the projections and 42 on the 49152-row output head (2.6 GB/s of weights, so a step
//! took 175 ms). Here each block of four weight rows stays in L1 while every activation row
//! is dotted with it, in 4 × 3 blocks of AVX2 FMA accumulators, the weight rows split
//! across rayon's threads.
//!
//! Each output is the same 8-lane dot product whatever `m` is, so a row's result does not
//! depend on how many rows share the product: batched decoding equals one sequence at a time.

use rayon::prelude::*;

use super::fused::SendPtr;

/// Most rows of `x` this kernel takes; more rows go to the blocked GEMM.
pub const MAX_ROWS: usize = 64;

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

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` (all row-major, tightly packed). Callers check
/// [`available`] first.
pub fn matmul_t(m: usize, n: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
    assert!(x.len() >= m * k && w.len() >= n * k, "few-rows matmul: operands smaller than {m}×{k} and {n}×{k}");
    assert!(available(), "few-rows matmul needs AVX2 and FMA");
    let mut y = vec![0f32; m * n];
    let out = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|task| {
        let (lo, hi) = (task * ROWS_PER_TASK, ((task + 1) * ROWS_PER_TASK).min(n));
        // The task's columns, [m, hi - lo], then copied row by row: writing y directly would
        // touch m far-apart rows (one page each for the 49152-wide output head) per block.
        let mut tile = vec![0f32; m * (hi - lo)];
        // SAFETY: AVX2 and FMA are present (asserted above); `x` and `w` hold m×k and n×k
        // elements; `tile` holds m × (hi - lo).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx2::columns(m, k, x, &w[lo * k..hi * k], &mut tile)
        };
        for (i, row) in tile.chunks_exact(hi - lo).enumerate() {
            // SAFETY: row i's columns lo..hi lie inside y and belong to this task alone.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.get().add(i * n + lo), hi - lo) };
        }
    });
    y
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Activation rows per register block (4 weight rows × 3 activation rows = 12
    /// accumulators, plus 3 activation vectors and 1 weight vector: all 16 AVX registers).
    const X_BLOCK: usize = 3;

    /// `tile[m, n] = x[m, k] · w[n, k]ᵀ` for one task's `n` weight rows.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns(m: usize, k: usize, x: &[f32], w: &[f32], tile: &mut [f32]) {
        let n = w.len() / k;
        let mut j = 0;
        while j < n {
            let wr = (n - j).min(4);
            let mut i = 0;
            while i < m {
                let xr = (m - i).min(X_BLOCK);
                let mut acc = [[0f32; X_BLOCK]; 4];
                match (wr, xr) {
                    (4, 3) => block::<4, 3>(k, x, w, i, j, &mut acc),
                    (4, 2) => block::<4, 2>(k, x, w, i, j, &mut acc),
                    (4, _) => block::<4, 1>(k, x, w, i, j, &mut acc),
                    (_, 3) => (0..wr).for_each(|r| block_row::<3>(k, x, w, i, j + r, &mut acc[r])),
                    (_, 2) => (0..wr).for_each(|r| block_row::<2>(k, x, w, i, j + r, &mut acc[r])),
                    _ => (0..wr).for_each(|r| block_row::<1>(k, x, w, i, j + r, &mut acc[r])),
                }
                for (r, row) in acc.iter().enumerate().take(wr) {
                    for (c, v) in row.iter().enumerate().take(xr) {
                        tile[(i + c) * n + j + r] = *v;
                    }
                }
                i += xr;
            }
            j += wr;
        }
    }

    /// Dot products of weight rows `j..j + W` with activation rows `i..i + X`.
    #[inline(always)]
    unsafe fn block<const W: usize, const X: usize>(k: usize, x: &[f32], w: &[f32], i: usize, j: usize, out: &mut [[f32; X_BLOCK]; 4]) {
        let mut acc = [[_mm256_setzero_ps(); X]; W];
        let xp: [*const f32; X] = std::array::from_fn(|c| x.as_ptr().add((i + c) * k));
        let wp: [*const f32; W] = std::array::from_fn(|r| w.as_ptr().add((j + r) * k));
        let vk = k / 8 * 8;
        let mut p = 0;
        while p < vk {
            let xv: [__m256; X] = std::array::from_fn(|c| _mm256_loadu_ps(xp[c].add(p)));
            for r in 0..W {
                let wv = _mm256_loadu_ps(wp[r].add(p));
                for c in 0..X {
                    acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                }
            }
            p += 8;
        }
        for r in 0..W {
            for c in 0..X {
                let mut s = hsum(acc[r][c]);
                for q in vk..k {
                    s += *wp[r].add(q) * *xp[c].add(q);
                }
                out[r][c] = s;
            }
        }
    }

    /// One weight row `j` against activation rows `i..i + X`.
    #[inline(always)]
    unsafe fn block_row<const X: usize>(k: usize, x: &[f32], w: &[f32], i: usize, j: usize, out: &mut [f32; X_BLOCK]) {
        let mut four = [[0f32; X_BLOCK]; 4];
        block::<1, X>(k, x, w, i, j, &mut four);
        out[..X].copy_from_slice(&four[0][..X]);
    }

    /// Sum of the eight lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn equals_the_naive_product_on_every_remainder() {
        assert!(available(), "the machines tunelab supports have AVX2 and FMA");
        for (m, n, k) in [(1, 1, 1), (3, 7, 13), (2, 130, 64), (5, 4, 576), (33, 67, 19), (64, 9, 1536)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
            let y = matmul_t(m, n, k, &x, &w);
            for a in 0..m {
                for b in 0..n {
                    let want: f64 = (0..k).map(|q| x[a * k + q] as f64 * w[b * k + q] as f64).sum();
                    let got = y[a * n + b] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "({m},{n},{k}) y[{a},{b}] = {got}, want {want}");
                }
            }
        }
    }
}
