//! The frozen-weight matmul `y = x · Wᵀ` every base projection uses, with a backward pass
//! that returns only `dX`.
//!
//! Two reasons it is its own op. candle's matmul backward also computes `dW`, which for a
//! frozen base weight is pure waste (as much work as the forward). And on these CPUs the
//! matmul kernel decides training speed: the portable `gemm` crate by default, or a system
//! BLAS (OpenBLAS, else BLIS) loaded at run time with `TUNELAB_BLAS=on`.

use std::sync::OnceLock;

use candle_core::{backend::BackendStorage, CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::bf16_rows::Bf16Rows;
use super::int8_rows::Int8Rows;
use super::packed::PackedRows;

/// `y = x · wᵀ` for `x` `[..., k]` and a frozen `w` `[n, k]`; gradients flow to `x` only.
///
/// Where this crate's CPU kernels do not apply (a GPU, portable ops) or `w` is stored in
/// another dtype than `x` (bf16 base weights), candle's matmul runs instead, on `x` cast to
/// `w`'s dtype, the result cast back: products accumulated in f32 by the device's GEMM.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("matmul input has a last dimension");
    let m = x.elem_count() / k.max(1);
    let x2 = x.contiguous()?.reshape((m, k))?;
    let y = if super::portable::cpu_kernels(x) && w.dtype() == x.dtype() {
        x2.apply_op2(&w.contiguous()?, FrozenMatmul)?
    } else {
        // A base weight is never a variable, so candle's backward skips its gradient.
        x2.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(x.dtype())?
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty") = w.dim(0)?;
    y.reshape(out_dims)
}

/// `y = x · wᵀ` for `x` `[..., k]` (f32, on the CPU) and a bf16 copy of the weight: both
/// rounded to bf16, the products summed in f32 (see [`super::bf16_rows`]). Inference only.
pub fn bf16_matmul(x: &Tensor, w: &std::sync::Arc<Bf16Rows>) -> candle_core::Result<Tensor> {
    let (n, k) = w.dims();
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!("bf16 matmul: input {dims:?} against a {n}×{k} weight");
    }
    let y = x.contiguous()?.reshape((x.elem_count() / k.max(1), k))?.apply_op1_no_bwd(&Bf16Matmul(w.clone()))?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty") = n;
    y.reshape(out_dims)
}

/// Weights a decoding step reads in blocks instead of as f32.
#[derive(Clone, Copy)]
pub enum BlockWeights<'a> {
    /// The model file's blocks, turned back into the exact f32 values as they are read.
    Packed(&'a PackedRows),
    /// Integer blocks, multiplied with activations rounded to 8 bits.
    Int8(&'a Int8Rows),
}

impl BlockWeights<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Self::Packed(w) => w.dims(),
            Self::Int8(w) => w.dims(),
        }
    }
}

/// One product [`block_matmul`] takes: block weights and an optional LoRA update
/// `(A, B, scale)`.
pub type BlockProduct<'a> = (BlockWeights<'a>, Option<(&'a Tensor, &'a Tensor, f64)>);

/// `y = x · wᵀ (+ scale · (x · Aᵀ) · Bᵀ with a LoRA update)` for each product, `x`
/// `[..., k]` (f32, on the CPU), every product in one parallel region (q, k and v; gate and
/// up); `None` (use the f32 weights) otherwise, and for an input that tracks gradients.
/// Inference only: no gradient.
///
/// - Packed weights, all of them: each base product is bit for bit the few-rows product
///   [`frozen_matmul`] computes on the dense weights of up to [`super::few_rows::MAX_ROWS`]
///   rows, for a fraction of the memory traffic.
/// - Integer blocks, all of them: `x` rounded to 8-bit blocks (see [`super::int8_rows`]).
///
/// Any number of rows: more than the few-rows kernel's are multiplied
/// [`super::few_rows::MAX_ROWS`] at a time. Every output row is computed the same way
/// whatever the other rows are, so prompts prefilled together (a step of several
/// sequences' rows) get exactly the values each gets alone.
///
/// The LoRA bottleneck `scale · x·Aᵀ` is an unrounded f32 few-rows product either way.
pub fn block_matmul(x: &Tensor, products: &[BlockProduct<'_>]) -> candle_core::Result<Option<Vec<Tensor>>> {
    let dims = x.dims().to_vec();
    let Some(&k) = dims.last() else { return Ok(None) };
    let m = x.elem_count() / k.max(1);
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && super::portable::cpu_kernels(t);
    let fits = products.iter().all(|(w, lora)| w.dims().1 == k && lora.is_none_or(|(a, b, _)| f32_cpu(a) && f32_cpu(b)));
    // An input that carries a gradient (an output head in a training pass) takes the
    // differentiable f32 path.
    if !fits || !f32_cpu(x) || x.track_op() || !block_route(products) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let loras: Vec<Option<(Tensor, Tensor, f32)>> = products
        .iter()
        .map(|(_, lora)| lora.map(|(a, b, scale)| Ok::<_, candle_core::Error>((a.contiguous()?, b.contiguous()?, scale as f32))).transpose())
        .collect::<candle_core::Result<_>>()?;
    let xs = F32View::new(&x)?;
    let factors: Vec<Factors<'_>> = loras
        .iter()
        .map(|lora| {
            lora.as_ref()
                .map(|(a, b, scale)| {
                    let (r, ak) = a.dims2()?;
                    if ak != k || b.dims2()?.1 != r {
                        candle_core::bail!("block matmul: LoRA A is {:?} and B {:?} for inputs of width {k}", a.dims(), b.dims());
                    }
                    Ok((F32View::new(a)?, F32View::new(b)?, r, *scale))
                })
                .transpose()
        })
        .collect::<candle_core::Result<_>>()?;
    // The file's blocks take any number of rows at once (the kernel multiplies them
    // `MAX_ROWS` at a time over weights it dequantizes once); integer blocks are given
    // `MAX_ROWS` rows at a time.
    let chunk = super::few_rows::MAX_ROWS;
    let ys = if m <= chunk || matches!(products.first(), Some((BlockWeights::Packed(_), _))) {
        block_rows(m, k, xs.values(), products, &factors)
    } else {
        let mut ys: Vec<Vec<f32>> = products.iter().map(|(w, _)| Vec::with_capacity(m * w.dims().0)).collect();
        for x in xs.values()[..m * k].chunks(chunk * k) {
            for (y, part) in ys.iter_mut().zip(block_rows(x.len() / k, k, x, products, &factors)) {
                y.extend_from_slice(&part);
            }
        }
        ys
    };
    let mut out = Vec::with_capacity(ys.len());
    for (y, (w, _)) in ys.into_iter().zip(products) {
        let mut out_dims = dims.clone();
        *out_dims.last_mut().expect("non-empty") = w.dims().0;
        out.push(Tensor::from_vec(y, out_dims, x.device())?);
    }
    Ok(Some(out))
}

/// LoRA factors as [`block_matmul`] reads them: `(A, B, rank, scale)`, or `None`.
type Factors<'a> = Option<(F32View<'a>, F32View<'a>, usize, f32)>;

/// [`block_matmul`]'s products for `m` rows of `x` (`[m, k]`; integer blocks are fast up
/// to the few-rows kernel's rows, the file's blocks at any count), one output vector each.
fn block_rows(m: usize, k: usize, x: &[f32], products: &[BlockProduct<'_>], factors: &[Factors<'_>]) -> Vec<Vec<f32>> {
    // Every LoRA bottleneck `scale · x·Aᵀ` in one parallel region.
    let downs: Vec<(&[f32], usize)> = factors.iter().flatten().map(|(a, _, r, _)| (a.values(), *r)).collect();
    let mut downs = if downs.is_empty() { Vec::new() } else { super::few_rows::matmul_t_dense_many(m, k, x, &downs) }.into_iter();
    let bottlenecks: Vec<Option<Vec<f32>>> = factors
        .iter()
        .map(|f| {
            f.as_ref().map(|(_, _, _, scale)| {
                let mut t = downs.next().expect("one product per factor");
                t.iter_mut().for_each(|v| *v *= scale);
                t
            })
        })
        .collect();
    let low_ranks: Vec<Option<super::few_rows::LowRank<'_>>> = factors
        .iter()
        .zip(&bottlenecks)
        .map(|(f, t)| match (f, t) {
            (Some((_, b, rank, _)), Some(t)) => Some(super::few_rows::LowRank { t, b: b.values(), rank: *rank }),
            _ => None,
        })
        .collect();
    // `block_matmul` admits products of one kind only.
    if matches!(products.first(), Some((BlockWeights::Packed(_), _))) {
        let jobs: Vec<_> =
            products.iter().zip(&low_ranks).filter_map(|((w, _), l)| if let BlockWeights::Packed(w) = w { Some((*w, *l)) } else { None }).collect();
        super::few_rows::matmul_t_packed_many(m, x, &jobs)
    } else {
        let jobs: Vec<_> =
            products.iter().zip(&low_ranks).filter_map(|((w, _), l)| if let BlockWeights::Int8(w) = w { Some((*w, *l)) } else { None }).collect();
        super::int8_rows::matmul_t_many(m, x, &jobs)
    }
}

/// A contiguous f32 CPU tensor's values, read in place (its storage held for reading).
struct F32View<'a> {
    storage: candle_core::StorageRef<'a>,
    range: std::ops::Range<usize>,
}

impl<'a> F32View<'a> {
    fn new(t: &'a Tensor) -> candle_core::Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(CpuStorage::F32(_)), Some((lo, hi))) => Ok(Self { storage, range: lo..hi }),
            _ => candle_core::bail!("expected a contiguous f32 CPU tensor, got {:?} on {:?}", t.dtype(), t.device().location()),
        }
    }

    fn values(&self) -> &[f32] {
        match &*self.storage {
            candle_core::Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            // `new` admits only f32 CPU storage.
            _ => &[],
        }
    }
}

/// Whether [`block_matmul`] runs `products` on this machine: all of one kind, the CPU has
/// the few-rows kernels, and for the file's blocks no system BLAS (they equal the dense
/// few-rows product, which with a system BLAS is BLAS's).
pub(crate) fn block_route(products: &[BlockProduct<'_>]) -> bool {
    let packed = products.iter().all(|(w, _)| matches!(w, BlockWeights::Packed(_)));
    let int8 = products.iter().all(|(w, _)| matches!(w, BlockWeights::Int8(_)));
    !products.is_empty() && super::few_rows::available() && if packed { blas().is_none() } else { int8 }
}

/// Whether an `m`-row product against a transposed f32 weight takes the few-rows kernel.
fn few_rows_route(m: usize) -> bool {
    m <= super::few_rows::MAX_ROWS && blas().is_none() && super::few_rows::available()
}

/// Which matrix-multiply implementation this process uses, for benchmark reports.
pub fn matmul_backend() -> &'static str {
    match blas() {
        Some(b) => b.name,
        None => "gemm crate",
    }
}

struct FrozenMatmul;
struct MatmulNN;

/// [`bf16_matmul`]'s op.
struct Bf16Matmul(std::sync::Arc<Bf16Rows>);

impl candle_core::CustomOp1 for Bf16Matmul {
    fn name(&self) -> &'static str {
        "bf16-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, _) = l.shape().dims2()?;
        let n = self.0.dims().0;
        let CpuStorage::F32(x) = s else { candle_core::bail!("bf16 matmul takes f32 input, got {:?}", s.dtype()) };
        Ok((CpuStorage::F32(super::bf16_rows::matmul_t(m, slice(x, l)?, &self.0)), Shape::from((m, n))))
    }
}

fn slice<'a, T>(data: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    if !l.is_contiguous() {
        candle_core::bail!("frozen matmul expects contiguous inputs");
    }
    Ok(&data[l.start_offset()..l.start_offset() + l.shape().elem_count()])
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_matmul(s1, l1, s2, l2, true)
    }

    fn bwd(&self, _x: &Tensor, w: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // dX = dY · W ([m, n] · [n, k]); W is frozen, so no dW.
        let dx = grad.contiguous()?.apply_op2_no_bwd(w, &MatmulNN)?;
        Ok((Some(dx), None))
    }
}

impl CustomOp2 for MatmulNN {
    fn name(&self) -> &'static str {
        "matmul-nn"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_matmul(s1, l1, s2, l2, false)
    }
}

/// `A · B` (or `A · Bᵀ` when `b_t`) on contiguous f32/f64 CPU storage.
fn cpu_matmul(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, b_t: bool) -> candle_core::Result<(CpuStorage, Shape)> {
    let (m, k) = l1.shape().dims2()?;
    let (r, c) = l2.shape().dims2()?;
    let (k2, n) = if b_t { (c, r) } else { (r, c) };
    if k != k2 {
        candle_core::bail!("matmul: inner dimensions {k} and {k2} differ");
    }
    let out = match (s1, s2) {
        // Decoding steps: a few rows against every weight row, read once.
        (CpuStorage::F32(a), CpuStorage::F32(b)) if b_t && few_rows_route(m) => {
            CpuStorage::F32(super::few_rows::matmul_t(m, n, k, slice(a, l1)?, slice(b, l2)?))
        }
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(gemm_rm(m, n, k, slice(a, l1)?, false, slice(b, l2)?, b_t)),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(gemm_rm(m, n, k, slice(a, l1)?, false, slice(b, l2)?, b_t)),
        _ => candle_core::bail!("matmul supports f32 and f64, got {:?} and {:?}", s1.dtype(), s2.dtype()),
    };
    Ok((out, Shape::from((m, n))))
}

/// Element types the matmul runs on.
trait Element: Copy + Default + 'static {
    const ZERO: Self;
    const ONE: Self;
    fn blas_gemm(b: &Blas) -> BlasGemm<Self>;
    fn dtype() -> DType;
}

type BlasGemm<T> = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, T, *const T, i32, *const T, i32, T, *mut T, i32);

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn blas_gemm(b: &Blas) -> BlasGemm<Self> {
        b.sgemm
    }
    fn dtype() -> DType {
        DType::F32
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn blas_gemm(b: &Blas) -> BlasGemm<Self> {
        b.dgemm
    }
    fn dtype() -> DType {
        DType::F64
    }
}

/// Row-major `C[m, n] = A · B` where `A` is `[m, k]` (or `[k, m]` when `a_t`) and `B` is
/// `[k, n]` (or `[n, k]` when `b_t`).
fn gemm_rm<T: Element>(m: usize, n: usize, k: usize, a: &[T], a_t: bool, b: &[T], b_t: bool) -> Vec<T> {
    let mut c = vec![T::ZERO; m * n];
    if m == 0 || n == 0 {
        return c;
    }
    if k == 0 {
        return c;
    }
    let (lda, ldb) = (if a_t { m } else { k }, if b_t { k } else { n });
    if let Some(blas) = blas() {
        const ROW_MAJOR: i32 = 101;
        const NO_TRANS: i32 = 111;
        const TRANS: i32 = 112;
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        // SAFETY: the slices hold m×k, k×n and m×n elements with the given leading dimensions.
        unsafe {
            (T::blas_gemm(blas))(
                ROW_MAJOR,
                t(a_t),
                t(b_t),
                m as i32,
                n as i32,
                k as i32,
                T::ONE,
                a.as_ptr(),
                lda as i32,
                b.as_ptr(),
                ldb as i32,
                T::ZERO,
                c.as_mut_ptr(),
                n as i32,
            );
        }
        return c;
    }
    // Strides as (row stride, column stride) of the logical A [m, k] and B [k, n].
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let _ = T::dtype();
    // SAFETY: pointers and strides describe the slices above; dst is not read (read_dst = false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    c
}

/// A system CBLAS loaded at run time.
struct Blas {
    name: &'static str,
    sgemm: BlasGemm<f32>,
    dgemm: BlasGemm<f64>,
    _lib: libloading::Library,
}

/// The system BLAS, loaded once when `TUNELAB_BLAS=on` (OpenBLAS, then BLIS). It is off by
/// default: measured on the 2-core machines, whole training steps were slower with OpenBLAS
/// (185 vs 214 tokens/s) because its threads and candle's rayon pool compete for the cores.
fn blas() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(load_blas).as_ref()
}

fn load_blas() -> Option<Blas> {
    if !std::env::var("TUNELAB_BLAS").is_ok_and(|v| v == "on" || v == "1") {
        return None;
    }
    // OpenBLAS 0.3.21 misdetects recent AVX-512 CPUs (as "Cooperlake", 3× slower sgemm);
    // it reads OPENBLAS_CORETYPE when the library loads, so set it first unless the user did.
    #[cfg(target_arch = "x86_64")]
    if std::env::var_os("OPENBLAS_CORETYPE").is_none() && std::arch::is_x86_feature_detected!("avx512f") {
        std::env::set_var("OPENBLAS_CORETYPE", "SkylakeX");
    }
    let candidates: [(&str, &'static str); 4] =
        [("libopenblas.so.0", "OpenBLAS"), ("libopenblas.so", "OpenBLAS"), ("libblis.so.4", "BLIS"), ("libblis.so", "BLIS")];
    for (file, name) in candidates {
        // SAFETY: loading a well-known system library whose initialisers are benign.
        let Ok(lib) = (unsafe { libloading::Library::new(file) }) else { continue };
        // SAFETY: the CBLAS signatures of cblas_sgemm / cblas_dgemm.
        let syms = unsafe {
            let s = lib.get::<BlasGemm<f32>>(b"cblas_sgemm\0").map(|f| *f);
            let d = lib.get::<BlasGemm<f64>>(b"cblas_dgemm\0").map(|f| *f);
            s.ok().zip(d.ok())
        };
        if let Some((sgemm, dgemm)) = syms {
            return Some(Blas { name, sgemm, dgemm, _lib: lib });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_matmul_equals_matmul_and_has_no_weight_gradient() -> candle_core::Result<()> {
        let x = Var::from_tensor(&Tensor::arange(0f64, 24.0, &Device::Cpu)?.reshape((2, 3, 4))?.sin()?)?;
        let w = Var::from_tensor(&Tensor::arange(0f64, 20.0, &Device::Cpu)?.reshape((5, 4))?.cos()?)?;
        let y = frozen_matmul(x.as_tensor(), w.as_tensor())?;
        let want = x.as_tensor().broadcast_matmul(&w.as_tensor().t()?)?;
        let diff = (&y - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{diff}");
        let grads = y.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(w.as_tensor()).is_none(), "frozen weight got a gradient");
        let want_grads = want.sqr()?.sum_all()?.backward()?;
        let d = (grads.get(x.as_tensor()).unwrap() - want_grads.get(x.as_tensor()).unwrap())?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(d < 1e-10, "{d}");
        Ok(())
    }
}
