//! Fused training ops: each decoder block piece (LoRA projection, causal attention with
//! rotary embedding, SwiGLU, output head + cross-entropy) as one candle custom op with a
//! hand-written backward pass, and a whole decoder layer as one op built from them.
//!
//! Why: composed from candle primitives, every intermediate tensor stays alive until the
//! backward pass ends (a LoRA projection kept four output-sized tensors, attention four
//! `T×T` score tensors per layer), so activation memory grew to 13 GB at batch 4 × 448. These
//! ops keep only what their backward needs — usually nothing beyond their inputs, which the
//! graph holds anyway — and recompute the rest (attention scores, the LoRA bottleneck).
//! Each op is checked against the composed form and finite differences in
//! `tests/gradients.rs` and `tests/fused_ops.rs`.
//!
//! All ops run on contiguous f32 or f64 CPU storage; [`available`] says when a tensor can
//! take the fused path, and callers fall back to composed ops otherwise (other devices,
//! LoRA dropout).

mod attention;
mod exp;
mod layer;
mod lm_head_loss;
mod lora_linear;
mod projection;
mod swiglu;

pub(crate) use attention::rotate;
pub use attention::{causal_attention, causal_attention_joined};
pub use layer::{decoder_layer, LayerSpec};
pub use lm_head_loss::lm_head_cross_entropy;
pub use lora_linear::lora_linear;
pub use projection::{project, Input, Part, PartLora};
pub use swiglu::swiglu;

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor, WithDType};

/// Whether tensors like `t` (device and dtype) can use the fused ops.
pub fn available(t: &Tensor) -> bool {
    super::portable::cpu_kernels(t) && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Element types of the fused kernels (f32 for training, f64 for gradient checks).
pub(crate) trait Float: num_traits::Float + WithDType + Send + Sync + Default + std::iter::Sum + 'static {
    /// Replaces every element by its exponential: many lanes at a time for f32 (within 2
    /// ulp, see `exp.rs`), the C library's `exp` for f64 (gradient checks).
    fn exp_in_place(xs: &mut [Self]);
}
impl Float for f32 {
    fn exp_in_place(xs: &mut [Self]) {
        exp::exp_in_place(xs);
    }
}
impl Float for f64 {
    fn exp_in_place(xs: &mut [Self]) {
        for x in xs {
            *x = x.exp();
        }
    }
}

/// The contiguous elements of `(storage, layout)` as a slice of `T`.
pub(crate) fn slice_of<'a, T: Float>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    if !l.is_contiguous() {
        candle_core::bail!("fused op expects contiguous inputs");
    }
    let data = T::cpu_storage_as_slice(s)?;
    Ok(&data[l.start_offset()..l.start_offset() + l.shape().elem_count()])
}

/// Runs `f` on the elements of a tensor (made contiguous first) as a slice of `T`.
pub(crate) fn with_slice<T: Float, R>(t: &Tensor, f: impl FnOnce(&[T]) -> candle_core::Result<R>) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(slice_of::<T>(cpu, layout)?),
        _ => candle_core::bail!("fused op runs on CPU tensors only"),
    }
}

/// An op whose backward pass runs on the elements of its input `x` `[m, ·]`, its joined LoRA
/// weights (if any) and the upstream gradient.
pub(crate) trait SliceBackward {
    /// The op's name in error messages.
    const NAME: &'static str;

    /// `(dx, d(joined LoRA weights))`.
    fn backward<T: Float>(&self, x: &[T], pack: Option<&[T]>, dy: &[T], m: usize) -> candle_core::Result<(Vec<T>, Option<Vec<T>>)>;
}

/// [`SliceBackward::backward`] on tensors (f32 or f64): the gradients shaped like `x` and
/// `pack`.
pub(crate) fn slice_grads<O: SliceBackward>(op: &O, x: &Tensor, pack: Option<&Tensor>, dy: &Tensor) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    fn run<T: Float, O: SliceBackward>(op: &O, x: &Tensor, pack: Option<&Tensor>, dy: &Tensor) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let m = x.dim(0)?;
        let (dx, dpack) = with_slice::<T, _>(x, |xs| {
            with_slice::<T, _>(dy, |dys| match pack {
                Some(p) => with_slice::<T, _>(p, |ps| op.backward(xs, Some(ps), dys, m)),
                None => op.backward(xs, None, dys, m),
            })
        })?;
        let dpack = match (dpack, pack) {
            (Some(d), Some(p)) => Some(tensor(d, p.dims())?),
            _ => None,
        };
        Ok((tensor(dx, x.dims())?, dpack))
    }
    match x.dtype() {
        DType::F32 => run::<f32, O>(op, x, pack, dy),
        DType::F64 => run::<f64, O>(op, x, pack, dy),
        dt => candle_core::bail!("{} supports f32 and f64, got {dt:?}", O::NAME),
    }
}

/// A tensor on the CPU from a vector of `T` in row-major order.
pub(crate) fn tensor<T: Float>(data: Vec<T>, shape: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// Whether a matrix operand is read transposed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trans {
    /// As stored: `[rows, cols]` row-major.
    No,
    /// Transposed: stored `[cols, rows]` row-major.
    Yes,
}

/// Threads for one matrix product.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// All of rayon's pool (one large product at a time).
    All,
    /// The calling thread only (products inside a parallel loop).
    One,
}

/// `C[m, n] = (accumulate ? C : 0) + alpha · op(A)[m, k] · op(B)[k, n]`, all row-major and
/// tightly packed (`op(A)` is `A` `[m, k]` or, with [`Trans::Yes`], `Aᵀ` of `A` `[k, m]`).
///
/// With [`Threads::All`] the product is cut into one block of rows (or columns, when there
/// are few rows) per rayon thread, each computed single-threaded: on these 2-core machines
/// that ran at 105–127 GFLOP/s against 95–107 for the `gemm` crate's own threading.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Float>(m: usize, n: usize, k: usize, a: &[T], ta: Trans, b: &[T], tb: Trans, c: &mut [T], accumulate: bool, alpha: T, threads: Threads) {
    let lda = if ta == Trans::No { k } else { m };
    let ldb = if tb == Trans::No { n } else { k };
    gemm_strided(m, n, k, Operand { data: a, ld: lda, trans: ta }, Operand { data: b, ld: ldb, trans: tb }, c, n, accumulate, alpha, threads);
}

/// One input of [`gemm_strided`]: a row-major matrix as stored, its row stride (at least its
/// stored width; larger for a column block of a wider matrix) and whether it is read
/// transposed.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) ld: usize,
    pub(crate) trans: Trans,
}

impl<'a, T> Operand<'a, T> {
    /// A tightly packed operand of `width` stored columns.
    pub(crate) fn packed(data: &'a [T], width: usize, trans: Trans) -> Self {
        Self { data, ld: width, trans }
    }

    /// `(row stride, column stride)` of the logical (possibly transposed) matrix.
    fn strides(&self) -> (usize, usize) {
        match self.trans {
            Trans::No => (self.ld, 1),
            Trans::Yes => (1, self.ld),
        }
    }

    /// Whether the slice holds a logical `rows × cols` matrix with these strides.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        let (stored_rows, stored_cols) = if self.trans == Trans::No { (rows, cols) } else { (cols, rows) };
        stored_rows == 0 || stored_cols == 0 || (stored_cols <= self.ld && self.data.len() >= (stored_rows - 1) * self.ld + stored_cols)
    }
}

/// [`gemm`] on operands with any row strides: `C` `[m, n]` has row stride `ldc`, so the
/// product can read or write a column block of a wider matrix (one projection's columns of
/// a fused q/k/v output, say).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<T>,
    b: Operand<T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    alpha: T,
    threads: Threads,
) {
    // SAFETY: `c` is initialized memory of `c.len()` elements.
    unsafe { gemm_to(m, n, k, a, b, c.as_mut_ptr(), c.len(), ldc, accumulate, alpha, threads) }
}

/// `alpha · op(A)·op(B)` `[m, n]` in a new vector, which the product writes without its
/// memory being zeroed first (zeroing the outputs of training's products took 4 % of a
/// step, on one thread).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_new<T: Float>(m: usize, n: usize, k: usize, a: Operand<T>, b: Operand<T>, alpha: T, threads: Threads) -> Vec<T> {
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: the spare capacity holds `m·n` elements; without `accumulate` the product
    // writes every element of `[m, n]` (row stride `n`) and reads none (the `gemm` crate
    // reads its destination only when asked to), and `k = 0` fills them with zeros.
    unsafe {
        gemm_to(m, n, k, a, b, c.as_mut_ptr(), m * n, n, false, alpha, threads);
        c.set_len(m * n);
    }
    c
}

/// [`gemm_strided`] into `c_len` elements at `c`.
///
/// # Safety
/// `c` must be valid for writes of `c_len` elements, and initialized where `accumulate`
/// reads it.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_to<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<T>,
    b: Operand<T>,
    c: *mut T,
    c_len: usize,
    ldc: usize,
    accumulate: bool,
    alpha: T,
    threads: Threads,
) {
    let c_fits = m == 0 || n == 0 || (n <= ldc && c_len >= (m - 1) * ldc + n);
    assert!(a.holds(m, k) && b.holds(k, n) && c_fits, "gemm: operands smaller than {m}×{k} · {k}×{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: inside the checked extent of `c`.
                    unsafe { c.add(i * ldc + j).write(T::zero()) };
                }
            }
        }
        return;
    }
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides(), b.strides());
    let parts = match threads {
        Threads::All if m * n * k >= 1 << 18 => rayon::current_num_threads().max(1),
        _ => 1,
    };
    let (ap, bp, cp) = (SendPtr(a.data.as_ptr().cast_mut()), SendPtr(b.data.as_ptr().cast_mut()), SendPtr(c));
    // Block i covers rows (or columns) [i·len/parts, (i+1)·len/parts).
    let by_rows = m >= 8 * parts || m >= n;
    let len = if by_rows { m } else { n };
    let block = move |i: usize| {
        let (lo, hi) = (i * len / parts, (i + 1) * len / parts);
        if lo == hi {
            return;
        }
        // SAFETY: the pointers come from slices holding op(A), op(B) and C with the strides
        // above (checked sizes); blocks write disjoint rows or columns of C.
        unsafe {
            let (ap, bp, cp) = (ap.get(), bp.get(), cp.get());
            let (mm, nn, a0, b0, c0) =
                if by_rows { (hi - lo, n, ap.add(lo * a_rs), bp, cp.add(lo * ldc)) } else { (m, hi - lo, ap, bp.add(lo * b_cs), cp.add(lo)) };
            gemm::gemm(
                mm,
                nn,
                k,
                c0,
                1,
                ldc as isize,
                accumulate,
                a0,
                a_cs as isize,
                a_rs as isize,
                b0,
                b_cs as isize,
                b_rs as isize,
                T::one(),
                alpha,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    if parts == 1 {
        block(0);
    } else {
        rayon::scope(|s| {
            for i in 1..parts {
                s.spawn(move |_| block(i));
            }
            block(0);
        });
    }
}

/// Runs `f` on a thread of rayon's global pool (at once when already on one), so that the
/// parallel loops inside it are forked and joined by pool threads.
///
/// Why: a parallel loop started from outside the pool hands its work to the pool and puts
/// the calling thread to sleep until it is done. A decoding step runs about 200 small
/// products, and those two handoffs per product (a futex wake, a sleep, a context switch)
/// took a third of single-stream decoding time. Inside the pool, the thread that runs the
/// step computes its share and the other worker steals the rest.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// A raw pointer that may cross to rayon's threads (blocks write disjoint parts).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: used only for disjoint writes and shared reads inside a scoped parallel loop
// (`gemm` here, `few_rows::matmul_t`).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_into_a_new_vector_equals_one_into_zeros_including_empty_sums() {
        for (m, n, k) in [(3, 5, 7), (70, 33, 9), (4, 6, 0), (1, 1, 1)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut want = vec![0f32; m * n];
            gemm(m, n, k, &a, Trans::No, &b, Trans::No, &mut want, false, 0.5, Threads::All);
            let got = gemm_new(m, n, k, Operand::packed(&a, k, Trans::No), Operand::packed(&b, n, Trans::No), 0.5, Threads::All);
            assert_eq!(got, want, "{m}×{k} · {k}×{n}");
        }
    }
}
