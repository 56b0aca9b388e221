//! A weight matrix rounded to bf16, and its product with activation rows, for generation
//! that trades exactness for speed (`--weights bf16`).
//!
//! Why: batched decoding and prompt passes (evaluation suites) are bound by multiply-adds.
//! AVX-512 BF16's `vdpbf16ps` does 32 bf16 multiply-adds into f32 per instruction where an
//! f32 FMA does 16, and bf16 weights need no dequantization from the file's blocks. The
//! price: each weight and each activation is rounded to bf16 (8 significant bits, a relative
//! error of at most 2⁻⁹) before the product, which sums in f32, so greedy tokens can differ
//! from the exact f32 path's (`bench eval` measures how many do). The exact path stays the
//! default.
//!
//! Layout: the weight's rows are packed in panels of 16 output columns, each panel k-major
//! with the two bf16 of a `(k, k + 1)` pair side by side: one 64-byte vector holds 16
//! columns × one pair, which `vdpbf16ps` multiplies with one activation pair broadcast to
//! every lane. The kernel keeps 12 activation rows × 2 panels of accumulators in registers
//! and needs no horizontal sums. Each output accumulates over `k` in the same order whatever
//! the number of rows, so a row's result does not depend on which rows share the product.

use half::bf16;
use rayon::prelude::*;

use super::fused::SendPtr;

/// Output columns per panel (one 16-lane f32 accumulator).
const PANEL: usize = 16;

/// bf16 values of one panel's `(k, k + 1)` pair: 16 columns × 2.
const PAIR_VALUES: usize = 2 * PANEL;

/// Panels per unit of parallel work (64 output columns).
const PANELS_PER_TASK: usize = 4;

/// Activation rows per register block.
const X_ROWS: usize = 12;

/// A `[rows, cols]` matrix rounded to bf16, packed in panels of 16 rows (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct Bf16Rows {
    rows: usize,
    cols: usize,
    /// `cols` rounded up to pairs.
    pairs: usize,
    panels: Vec<bf16>,
}

impl Bf16Rows {
    /// `weights` (`[rows, cols]`, f32, row-major) rounded to the nearest bf16 and packed.
    pub fn from_f32(weights: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(weights.len(), rows * cols, "{} values for a {rows}×{cols} matrix", weights.len());
        let pairs = cols.div_ceil(2);
        let mut panels = vec![bf16::ZERO; rows.div_ceil(PANEL) * pairs * PAIR_VALUES];
        for (r, row) in weights.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let panel = &mut panels[r / PANEL * pairs * PAIR_VALUES..][..pairs * PAIR_VALUES];
            for (q, &v) in row.iter().enumerate() {
                panel[q / 2 * PAIR_VALUES + r % PANEL * 2 + q % 2] = bf16::from_f32(v);
            }
        }
        Self { rows, cols, pairs, panels }
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.panels.len() * 2
    }

    /// Panels `lo..hi`.
    fn panels(&self, lo: usize, hi: usize) -> &[bf16] {
        let len = self.pairs * PAIR_VALUES;
        &self.panels[lo * len..hi * len]
    }
}

/// Whether this CPU has the bf16 dot-product instruction the fast kernel uses (without it a
/// portable loop computes the same rounded products, much more slowly).
pub fn dot_product_available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with `x` and `w` rounded to bf16 and the products summed in
/// f32, the output columns split across rayon's threads.
pub fn matmul_t(m: usize, x: &[f32], w: &Bf16Rows) -> Vec<f32> {
    let (n, k) = w.dims();
    assert!(x.len() >= m * k, "bf16 matmul: activations smaller than {m}×{k}");
    let row_len = 2 * w.pairs;
    let mut xb = vec![bf16::ZERO; m * row_len];
    for (rounded, row) in xb.chunks_exact_mut(row_len.max(1)).zip(x.chunks_exact(k.max(1))).take(m) {
        rounded.iter_mut().zip(row).for_each(|(r, &v)| *r = bf16::from_f32(v));
    }
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let out = SendPtr(y.as_mut_ptr());
    let panels = n.div_ceil(PANEL);
    (0..panels.div_ceil(PANELS_PER_TASK)).into_par_iter().for_each(|task| {
        let (lo, hi) = (task * PANELS_PER_TASK, ((task + 1) * PANELS_PER_TASK).min(panels));
        let block = Block { m, pairs: w.pairs, x: &xb, panels: w.panels(lo, hi), col0: lo * PANEL, n };
        // SAFETY: each task writes only its own columns `lo·16..hi·16` (below `n`) of `y`'s
        // m rows; the kernel runs only where `dot_product_available` found its features.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if dot_product_available() {
                return avx512::columns(&block, out.get());
            }
            block.columns_portable(out.get());
        }
    });
    y
}

/// One task's share of a product: every activation row against a run of panels.
struct Block<'a> {
    m: usize,
    pairs: usize,
    /// The activations, rounded, each row `2 · pairs` long.
    x: &'a [bf16],
    /// The task's panels.
    panels: &'a [bf16],
    /// The output column of the first panel's first lane.
    col0: usize,
    /// Output columns in all (the row stride of `y`).
    n: usize,
}

impl Block<'_> {
    /// The same sums as the AVX-512 kernel, lane by lane.
    ///
    /// # Safety
    /// `y` holds `m × n` values; no other thread writes this block's columns.
    unsafe fn columns_portable(&self, y: *mut f32) {
        let panel_len = self.pairs * PAIR_VALUES;
        for (p, panel) in self.panels.chunks_exact(panel_len).enumerate() {
            let col = self.col0 + p * PANEL;
            let width = (self.n - col).min(PANEL);
            for i in 0..self.m {
                let xs = &self.x[i * 2 * self.pairs..][..2 * self.pairs];
                let mut acc = [0f32; PANEL];
                for (ws, xp) in panel.chunks_exact(PAIR_VALUES).zip(xs.chunks_exact(2)) {
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += ws[2 * c].to_f32() * xp[0].to_f32() + ws[2 * c + 1].to_f32() * xp[1].to_f32();
                    }
                }
                std::ptr::copy_nonoverlapping(acc.as_ptr(), y.add(i * self.n + col), width);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Block, PAIR_VALUES, PANEL, X_ROWS};

    /// Every activation row of `b` against its panels, two panels by up to twelve rows at a
    /// time.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 must be available; as for [`Block::columns_portable`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn columns(b: &Block, y: *mut f32) {
        let panels = b.panels.len() / (b.pairs * PAIR_VALUES);
        let mut p = 0;
        while p < panels {
            let wide = (panels - p).min(2);
            let mut i = 0;
            while i < b.m {
                let rows = (b.m - i).min(X_ROWS);
                match wide {
                    2 => rows_of::<2>(b, rows, i, p, y),
                    _ => rows_of::<1>(b, rows, i, p, y),
                }
                i += rows;
            }
            p += wide;
        }
    }

    /// [`block`] with the row count made a constant.
    #[inline(always)]
    unsafe fn rows_of<const W: usize>(b: &Block, rows: usize, i: usize, p: usize, y: *mut f32) {
        match rows {
            1 => block::<W, 1>(b, i, p, y),
            2 => block::<W, 2>(b, i, p, y),
            3 => block::<W, 3>(b, i, p, y),
            4 => block::<W, 4>(b, i, p, y),
            5 => block::<W, 5>(b, i, p, y),
            6 => block::<W, 6>(b, i, p, y),
            7 => block::<W, 7>(b, i, p, y),
            8 => block::<W, 8>(b, i, p, y),
            9 => block::<W, 9>(b, i, p, y),
            10 => block::<W, 10>(b, i, p, y),
            11 => block::<W, 11>(b, i, p, y),
            12 => block::<W, 12>(b, i, p, y),
            _ => unreachable!("block of {rows} rows above {X_ROWS}"),
        }
    }

    /// Activation rows `i..i + X` against panels `p..p + W`: `X × W` accumulators, one
    /// weight vector per panel and one broadcast activation pair per row each step.
    #[inline(always)]
    unsafe fn block<const W: usize, const X: usize>(b: &Block, i: usize, p: usize, y: *mut f32) {
        let panel_len = b.pairs * PAIR_VALUES;
        let mut acc = [[_mm512_setzero_ps(); W]; X];
        let xp: [*const i32; X] = std::array::from_fn(|c| b.x.as_ptr().add((i + c) * 2 * b.pairs).cast::<i32>());
        let wp: [*const u16; W] = std::array::from_fn(|r| b.panels.as_ptr().add((p + r) * panel_len).cast::<u16>());
        for s in 0..b.pairs {
            let wv: [__m512bh; W] = std::array::from_fn(|r| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wp[r].add(s * PAIR_VALUES).cast())));
            for c in 0..X {
                let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(xp[c].add(s).read_unaligned()));
                for r in 0..W {
                    acc[c][r] = _mm512_dpbf16_ps(acc[c][r], wv[r], xv);
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (r, v) in row.iter().enumerate() {
                let col = b.col0 + (p + r) * PANEL;
                let width = (b.n - col).min(PANEL);
                let mask: __mmask16 = if width == PANEL { !0 } else { (1u16 << width) - 1 };
                _mm512_mask_storeu_ps(y.add((i + c) * b.n + col), mask, *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let w = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.1).collect();
        (x, w)
    }

    fn rounded(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&v| bf16::from_f32(v).to_f64()).collect()
    }

    #[test]
    fn the_product_equals_the_product_of_the_rounded_values() {
        for (m, n, k) in [(1, 5, 32), (6, 70, 576), (13, 33, 1536), (3, 4, 41), (30, 3, 64), (25, 200, 7), (0, 4, 8)] {
            let (x, w) = operands(m, n, k);
            let y = matmul_t(m, &x, &Bf16Rows::from_f32(&w, n, k));
            let (xr, wr) = (rounded(&x), rounded(&w));
            for a in 0..m {
                for b in 0..n {
                    let want: f64 = (0..k).map(|q| xr[a * k + q] * wr[b * k + q]).sum();
                    let got = y[a * n + b] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "({m},{n},{k}) y[{a},{b}] = {got}, want {want}");
                }
            }
        }
    }

    #[test]
    fn a_row_s_result_does_not_depend_on_how_many_rows_share_the_product() {
        let (m, n, k) = (29, 70, 576);
        let (x, w) = operands(m, n, k);
        let w = Bf16Rows::from_f32(&w, n, k);
        let all = matmul_t(m, &x, &w);
        for a in 0..m {
            assert_eq!(matmul_t(1, &x[a * k..(a + 1) * k], &w), all[a * n..(a + 1) * n], "row {a}");
        }
    }

    #[test]
    fn the_portable_loop_matches_the_kernel() {
        let (m, n, k) = (14, 40, 100);
        let (x, w) = operands(m, n, k);
        let w = Bf16Rows::from_f32(&w, n, k);
        let fast = matmul_t(m, &x, &w);
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut slow = vec![f32::NAN; m * n];
        let block = Block { m, pairs: w.pairs, x: &xb, panels: w.panels(0, n.div_ceil(PANEL)), col0: 0, n };
        // SAFETY: `slow` holds m × n values; one thread.
        unsafe { block.columns_portable(slow.as_mut_ptr()) };
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "kernel {a}, portable {b}");
        }
    }

    #[test]
    fn packing_rounds_to_the_nearest_bf16() {
        let w: Vec<f32> = (0..6).map(|i| 1.0 + i as f32 / 300.0).collect();
        let packed = Bf16Rows::from_f32(&w, 2, 3);
        assert_eq!(packed.dims(), (2, 3));
        assert_eq!(packed.bytes(), 2 * PAIR_VALUES * 2);
        // Row 1, column 2 sits in pair 1, lane 1, first of its pair.
        assert_eq!(packed.panels[PAIR_VALUES + 2], bf16::from_f32(w[5]));
        assert_eq!(packed.panels[PAIR_VALUES + 3], bf16::ZERO, "odd k is padded with zero");
    }
}
