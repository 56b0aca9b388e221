//! A weight matrix kept in its GGUF file's own blocks (Q4_1, Q8_0) for decoding steps.
//!
//! Why: a decoding step reads every weight once, so its speed is the bytes per weight. The
//! f32 copy the model trains with is 4 bytes per weight; the file's Q4_1 blocks are 0.625.
//! [`PackedRows`] keeps those blocks byte for byte (rows reordered where the loader
//! reorders the f32 rows) and turns them back into f32 on demand, computing each value with
//! the same expression as candle's dequantization, so the values are bit-for-bit the f32
//! weights: a decoding step over packed rows gives exactly the logits of the f32 path (see
//! `few_rows`).

use candle_core::quantized::GgmlDType;

/// Values per block in both formats.
const BLOCK: usize = 32;

/// The block formats kept packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit values `q`: `q·d + m`. Byte `j`'s
    /// low nibble is value `j`, its high nibble value `j + 16`.
    Q4_1,
    /// f16 scale `d`, 32 signed bytes `q`: `q·d`.
    Q8_0,
}

impl BlockFormat {
    /// Bytes of one block (f16 scales first, then the values), as GGUF stores it.
    const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 4 + BLOCK / 2,
            Self::Q8_0 => 2 + BLOCK,
        }
    }
}

/// A `[rows, cols]` matrix as GGUF blocks, row-major, each row `cols / 32` blocks.
#[derive(Debug, Clone)]
pub struct PackedRows {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    blocks: Vec<u8>,
}

impl PackedRows {
    /// Packs a GGUF tensor's raw bytes (`dtype` blocks of a `[rows, cols]` matrix); `None`
    /// for formats kept as f32 only, or when the bytes do not match the shape.
    pub fn from_gguf(dtype: GgmlDType, data: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let format = match dtype {
            GgmlDType::Q4_1 => BlockFormat::Q4_1,
            GgmlDType::Q8_0 => BlockFormat::Q8_0,
            _ => return None,
        };
        if cols == 0 || !cols.is_multiple_of(BLOCK) || data.len() != rows.checked_mul(cols / BLOCK)?.checked_mul(format.block_bytes())? {
            return None;
        }
        Some(Self { format, rows, cols, blocks: data.to_vec() })
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.blocks.len()
    }

    /// Every block, row by row (f16 scales first, then the values, as the file stores them).
    pub(super) fn blocks(&self) -> std::slice::ChunksExact<'_, u8> {
        self.blocks.chunks_exact(self.format.block_bytes())
    }

    /// The same matrix with its rows reordered: row `r` of the result is row `order[r]`.
    pub fn with_rows_in_order(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows, "row order of {} rows for a {}-row matrix", order.len(), self.rows);
        let blocks = order.iter().flat_map(|&r| self.row(r)).copied().collect();
        Self { blocks, ..self.clone() }
    }

    /// Row `r`'s blocks.
    fn row(&self, r: usize) -> &[u8] {
        let len = self.cols / BLOCK * self.format.block_bytes();
        &self.blocks[r * len..(r + 1) * len]
    }

    /// Rows `lo..hi`'s blocks.
    fn rows(&self, lo: usize, hi: usize) -> &[u8] {
        let len = self.cols / BLOCK * self.format.block_bytes();
        &self.blocks[lo * len..hi * len]
    }

    /// Writes rows `lo..hi` as f32 into `out` (`(hi - lo) × cols` values), each value
    /// exactly what candle's dequantization of the same block gives.
    pub fn dequantize_rows(&self, lo: usize, hi: usize, out: &mut [f32]) {
        assert!(lo <= hi && hi <= self.rows && out.len() == (hi - lo) * self.cols, "rows {lo}..{hi} of {} into {} values", self.rows, out.len());
        let blocks = self.rows(lo, hi);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present; `blocks` holds `out.len() / 32` whole blocks.
            unsafe {
                match self.format {
                    BlockFormat::Q4_1 => avx512::q4_1(blocks, out),
                    BlockFormat::Q8_0 => avx512::q8_0(blocks, out),
                }
            }
            return;
        }
        match self.format {
            BlockFormat::Q4_1 => scalar_q4_1(blocks, out),
            BlockFormat::Q8_0 => scalar_q8_0(blocks, out),
        }
    }

    /// `out[r - lo] = row r · x` for rows `lo..hi` and one activation row `x` (`cols`
    /// values), the blocks dequantized in registers. Each dot product accumulates in the
    /// same order as `few_rows`'s AVX-512 kernel does on the dense rows, so the results are
    /// equal bit for bit. `false` (nothing written) where AVX-512F is missing.
    pub fn dot_rows(&self, lo: usize, hi: usize, x: &[f32], out: &mut [f32]) -> bool {
        assert!(lo <= hi && hi <= self.rows && x.len() == self.cols && out.len() == hi - lo, "rows {lo}..{hi} of {} against {} values", self.rows, x.len());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            for (r, y) in (lo..hi).zip(out.iter_mut()) {
                // SAFETY: AVX-512F is present; the row holds `x.len() / 32` whole blocks.
                *y = unsafe {
                    match self.format {
                        BlockFormat::Q4_1 => avx512::q4_1_dot(self.row(r), x),
                        BlockFormat::Q8_0 => avx512::q8_0_dot(self.row(r), x),
                    }
                };
            }
            return true;
        }
        false
    }
}

/// A block's f16 field at byte `at`, as f32 (exact).
fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Q4_1 blocks to f32.
fn scalar_q4_1(blocks: &[u8], out: &mut [f32]) {
    for (block, ys) in blocks.chunks_exact(BlockFormat::Q4_1.block_bytes()).zip(out.chunks_exact_mut(BLOCK)) {
        let (d, m) = (f16_at(block, 0), f16_at(block, 2));
        for (j, q) in block[4..].iter().enumerate() {
            ys[j] = (q & 0x0F) as f32 * d + m;
            ys[j + BLOCK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Q8_0 blocks to f32.
fn scalar_q8_0(blocks: &[u8], out: &mut [f32]) {
    for (block, ys) in blocks.chunks_exact(BlockFormat::Q8_0.block_bytes()).zip(out.chunks_exact_mut(BLOCK)) {
        let d = f16_at(block, 0);
        for (y, q) in ys.iter_mut().zip(&block[2..]) {
            *y = *q as i8 as f32 * d;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BlockFormat, BLOCK};

    const Q4_1_BYTES: usize = BlockFormat::Q4_1.block_bytes();
    const Q8_0_BYTES: usize = BlockFormat::Q8_0.block_bytes();

    /// The f16 at `p`, widened exactly and broadcast to sixteen lanes.
    #[inline(always)]
    unsafe fn f16_splat(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_set1_epi16(p.cast::<i16>().read_unaligned()))
    }

    /// One Q4_1 block's 32 values as two 16-lane vectors: the block's sixteen possible
    /// values `q·d + m` (q = 0..15; a multiply, then an add: no fused multiply-add, so each
    /// rounds exactly as the scalar expression does) computed once, then looked up by each
    /// nibble (`vpermps` reads an index's low four bits, so the low nibbles need no mask).
    #[inline(always)]
    unsafe fn q4_1_block(block: *const u8) -> (__m512, __m512) {
        let (d, m) = (f16_splat(block), f16_splat(block.add(2)));
        let nibble_values = _mm512_set_ps(15.0, 14.0, 13.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0);
        let table = _mm512_add_ps(_mm512_mul_ps(nibble_values, d), m);
        let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(block.add(4).cast()));
        (_mm512_permutexvar_ps(bytes, table), _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table))
    }

    /// One Q8_0 block's 32 values as two 16-lane vectors.
    #[inline(always)]
    unsafe fn q8_0_block(block: *const u8) -> (__m512, __m512) {
        let d = f16_splat(block);
        let half = |at: usize| _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(block.add(2 + at).cast()))), d);
        (half(0), half(16))
    }

    /// [`super::scalar_q4_1`], sixteen values at a time.
    ///
    /// # Safety
    /// AVX-512F must be available; `out` has room for every block's 32 values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn q4_1(blocks: &[u8], out: &mut [f32]) {
        for (block, ys) in blocks.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            let (lo, hi) = q4_1_block(block.as_ptr());
            _mm512_storeu_ps(ys.as_mut_ptr(), lo);
            _mm512_storeu_ps(ys.as_mut_ptr().add(16), hi);
        }
    }

    /// [`super::scalar_q8_0`], sixteen values at a time.
    ///
    /// # Safety
    /// AVX-512F must be available; `out` has room for every block's 32 values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn q8_0(blocks: &[u8], out: &mut [f32]) {
        for (block, ys) in blocks.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            let (lo, hi) = q8_0_block(block.as_ptr());
            _mm512_storeu_ps(ys.as_mut_ptr(), lo);
            _mm512_storeu_ps(ys.as_mut_ptr().add(16), hi);
        }
    }

    /// One row · `x`: the row's values (`$decode` turns a block into them) multiplied into
    /// one 16-lane accumulator in column order, then summed across lanes. (Interleaving four
    /// rows' accumulators measured slower.)
    macro_rules! dot {
        ($name:ident, $decode:ident, $bytes:expr) => {
            /// # Safety
            /// AVX-512F must be available; the row holds `x.len() / 32` blocks.
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(row: &[u8], x: &[f32]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                for (block, xs) in row.chunks_exact($bytes).zip(x.chunks_exact(BLOCK)) {
                    let (lo, hi) = $decode(block.as_ptr());
                    acc = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xs.as_ptr()), acc);
                    acc = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xs.as_ptr().add(16)), acc);
                }
                _mm512_reduce_add_ps(acc)
            }
        };
    }
    dot!(q4_1_dot, q4_1_block, Q4_1_BYTES);
    dot!(q8_0_dot, q8_0_block, Q8_0_BYTES);
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    use super::*;

    /// Random-ish `[rows, cols]` weights quantized by candle, packed from candle's own
    /// bytes, and candle's dequantization of them.
    fn quantized(dtype: GgmlDType, rows: usize, cols: usize) -> (PackedRows, Vec<f32>) {
        let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3 + (i % 3) as f32 * 1e-3).collect();
        let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let packed = PackedRows::from_gguf(dtype, &q.data().unwrap(), rows, cols).expect("packs");
        (packed, want)
    }

    #[test]
    fn dequantized_rows_equal_candle_bit_for_bit() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (rows, cols) = (7, 96);
            let (packed, want) = quantized(dtype, rows, cols);
            for (lo, hi) in [(0, rows), (2, 5), (6, 7), (3, 3)] {
                let mut got = vec![f32::NAN; (hi - lo) * cols];
                packed.dequantize_rows(lo, hi, &mut got);
                let want = &want[lo * cols..hi * cols];
                assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?} rows {lo}..{hi}");
                let mut scalar = vec![f32::NAN; (hi - lo) * cols];
                match packed.format {
                    BlockFormat::Q4_1 => scalar_q4_1(packed.rows(lo, hi), &mut scalar),
                    BlockFormat::Q8_0 => scalar_q8_0(packed.rows(lo, hi), &mut scalar),
                }
                assert!(scalar.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?} scalar rows {lo}..{hi}");
            }
        }
    }

    #[test]
    fn reordered_rows_follow_the_order() {
        let (packed, want) = quantized(GgmlDType::Q4_1, 4, 64);
        let order = [2, 0, 3, 1];
        let moved = packed.with_rows_in_order(&order);
        let mut got = vec![0f32; 4 * 64];
        moved.dequantize_rows(0, 4, &mut got);
        for (r, &from) in order.iter().enumerate() {
            assert_eq!(got[r * 64..(r + 1) * 64], want[from * 64..(from + 1) * 64], "row {r}");
        }
    }

    #[test]
    fn mismatched_or_unsupported_tensors_are_not_packed() {
        assert!(PackedRows::from_gguf(GgmlDType::Q4_1, &[0; 20], 1, 64).is_none(), "too few bytes");
        assert!(PackedRows::from_gguf(GgmlDType::Q4_1, &[0; 20], 1, 16).is_none(), "row not whole blocks");
        assert!(PackedRows::from_gguf(GgmlDType::F32, &[0; 128], 1, 32).is_none(), "f32 stays f32");
        assert!(PackedRows::from_gguf(GgmlDType::Q8_0, &[0; 34], 1, 32).is_some());
    }
}
