//! Softmax attention of one row's query heads over its sequence's cached keys and values
//! (decoding and prefill steps of [`super::Transformer::step_sequences`]).
//!
//! The query heads that share a key/value head are taken together, so each cached key is
//! read once for all of them. Every row is computed alone, by the same code whatever the
//! other rows of its step, so batched decoding equals one sequence at a time.
//!
//! In batched decoding this reads every sequence's whole cache each step (32 sequences of
//! ~120 positions: ~180 MB a step for SmolLM2-135M), so it runs at the memory's speed: an
//! AVX-512 version keeping head vectors in registers measured no faster (BENCHMARKS,
//! fourteenth session).

/// A row's query heads sharing one key/value head, and the cache positions they attend.
pub(super) struct HeadGroup<'a> {
    /// The queries, `[reps, dim]` (already rotated).
    pub q: &'a [f32],
    /// The key/value head's cached keys and values, `[len, dim]` each.
    pub keys: &'a [f32],
    pub values: &'a [f32],
    /// Query heads per key/value head.
    pub reps: usize,
    pub dim: usize,
}

/// Writes each query head's attention output into `out` (`[reps, dim]`).
pub(super) fn attend(h: &HeadGroup, out: &mut [f32]) {
    debug_assert!(h.keys.len() == h.values.len() && h.keys.len().is_multiple_of(h.dim) && !h.keys.is_empty());
    debug_assert!(h.q.len() == h.reps * h.dim && out.len() == h.q.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { attend_avx512_compiled(h, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::model::few_rows::available() {
        // SAFETY: `available` checked that the CPU has AVX2 and FMA.
        return unsafe { attend_avx2_compiled(h, out) };
    }
    attend_portable(h, out)
}

/// [`attend_portable`] compiled with AVX-512F.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attend_avx512_compiled(h: &HeadGroup, out: &mut [f32]) {
    attend_portable(h, out)
}

/// [`attend_portable`] compiled with AVX2 and FMA (the crate's baseline is SSE2, which left
/// this loop at a tenth of batched decoding time).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2_compiled(h: &HeadGroup, out: &mut [f32]) {
    attend_portable(h, out)
}

/// The attention in plain Rust, inlined into each instruction-set variant.
#[inline(always)]
fn attend_portable(h: &HeadGroup, out: &mut [f32]) {
    let len = h.keys.len() / h.dim;
    let scale = 1.0 / (h.dim as f32).sqrt();
    let mut scores = vec![0f32; h.reps * len];
    for (j, key) in h.keys.chunks_exact(h.dim).enumerate() {
        for (rep, query) in h.q.chunks_exact(h.dim).enumerate() {
            scores[rep * len + j] = dot(query, key) * scale;
        }
    }
    for (rep, row) in scores.chunks_exact_mut(len).enumerate() {
        let sum = softmax_numerators(row);
        let o = &mut out[rep * h.dim..][..h.dim];
        o.fill(0.0);
        for (p, value) in row.iter().zip(h.values.chunks_exact(h.dim)) {
            for (o, v) in o.iter_mut().zip(value) {
                *o += p * v;
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Replaces `scores` by `exp(score − max)` and returns their sum.
#[inline(always)]
fn softmax_numerators(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    sum
}

/// Dot product in sixteen independent lanes (so the compiler vectorizes it).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitmix::SplitMix64;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64(seed);
        (0..n).map(|_| (rng.uniform() * 4.0 - 2.0) as f32).collect()
    }

    /// The attention in f64, straight from its definition.
    fn reference(h: &HeadGroup) -> Vec<f64> {
        let len = h.keys.len() / h.dim;
        let mut out = vec![0f64; h.reps * h.dim];
        for rep in 0..h.reps {
            let q = &h.q[rep * h.dim..(rep + 1) * h.dim];
            let scores: Vec<f64> = (0..len)
                .map(|j| q.iter().zip(&h.keys[j * h.dim..(j + 1) * h.dim]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (h.dim as f64).sqrt())
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, p) in e.iter().enumerate() {
                for d in 0..h.dim {
                    out[rep * h.dim + d] += p / sum * h.values[j * h.dim + d] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_the_definition_for_each_head_size_and_grouping() {
        for (dim, reps, len) in [(64, 3, 1), (64, 3, 37), (64, 7, 130), (128, 2, 50), (128, 5, 9), (32, 4, 20), (80, 1, 17)] {
            let (q, keys, vals) = (values(reps * dim, 1), values(len * dim, 2), values(len * dim, 3));
            let h = HeadGroup { q: &q, keys: &keys, values: &vals, reps, dim };
            let want = reference(&h);
            let mut got = vec![0f32; reps * dim];
            attend(&h, &mut got);
            let err = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
            assert!(err < 1e-5, "dim {dim}, {reps} heads, {len} positions: off by {err}");
        }
    }
}
