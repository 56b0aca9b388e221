//! `eˣ` over f32 slices, many lanes at a time, for the training ops' softmax,
//! cross-entropy and SwiGLU.
//!
//! Why: those ops take about 550 million exponentials per training step at batch 4 × 448
//! (attention's scores forward and again in backward, the output head's logits, SwiGLU's
//! sigmoid three times), and the C library's `expf`, one value per call, was 5–6 % of the
//! step. The function below has no branches and no calls, so a loop over it compiles to
//! AVX-512 (16 lanes) or AVX2 (8 lanes) code; which one runs is chosen once, at run time.
//!
//! Accuracy: within 2 ulp of the exact value over the whole f32 range (tests below compare
//! with `f64::exp`), NaN stays NaN, `+∞` and overflow give `+∞`, `−∞` and results below
//! `6·10⁻³⁹` give 0. The inference path keeps the C library's `expf` (its answers are
//! compared bit for bit across batch sizes); training's losses and gradients are compared
//! with tolerances.

/// Below this the result is returned as 0 (`e^−88` ≈ 6.1·10⁻³⁹, a subnormal).
const LOWEST: f32 = -88.0;
/// `ln(f32::MAX)`: above it the result is `+∞`.
const HIGHEST: f32 = 88.722_84;

/// `eˣ` for one value: Cody–Waite reduction `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, Cephes'
/// degree-6 polynomial for `eʳ`, then `2ⁿ` applied as two exact powers of two so that
/// neither overflows on the way (`n` runs from −127 to 128).
#[inline(always)]
fn exp_one(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(LOWEST, HIGHEST); // NaN stays NaN
                                       // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits,
                                       // read back without a float-to-integer conversion (which does not vectorize).
    const ROUND: f32 = 12_582_912.0;
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    let n = t.to_bits() as i32 - ROUND.to_bits() as i32; // any value for NaN: `y` is NaN
    let half = n >> 1;
    let pow2 = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    let v = y * pow2(half) * pow2(n - half);
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else {
        v
    }
}

/// Replaces every element of `xs` by its exponential.
pub(crate) fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { exp_avx512(xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { exp_avx2(xs) };
        }
    }
    exp_portable(xs);
}

fn exp_portable(xs: &mut [f32]) {
    for x in xs {
        *x = exp_one(*x);
    }
}

/// The portable loop compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_avx512(xs: &mut [f32]) {
    exp_portable(xs);
}

/// The portable loop compiled for AVX2 with FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(xs: &mut [f32]) {
    exp_portable(xs);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `got` and the exact `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.to_bits() + 1) - w).abs() as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn every_path_is_within_two_ulp_of_the_exact_exponential() {
        // A dense sweep of the range where results are normal numbers.
        let xs: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.5 * i as f32 / 200_000.0).collect();
        let mut fast = xs.clone();
        exp_in_place(&mut fast);
        let mut portable = xs.clone();
        exp_portable(&mut portable);
        for ((&x, &f), &p) in xs.iter().zip(&fast).zip(&portable) {
            let want = (x as f64).exp();
            assert!(ulps(f, want) <= 2.0, "exp({x}) = {f}, exact {want}");
            assert!(ulps(p, want) <= 2.0, "portable exp({x}) = {p}, exact {want}");
        }
    }

    #[test]
    fn special_values_and_the_ends_of_the_range() {
        let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 89.0, 88.72, -88.5, -87.9, -1e-30, 1e-30];
        exp_in_place(&mut xs);
        assert!(xs[0].is_nan());
        assert_eq!(xs[1], f32::INFINITY);
        assert_eq!(xs[2], 0.0);
        assert_eq!((xs[3], xs[4]), (1.0, 1.0));
        assert_eq!(xs[5], f32::INFINITY);
        assert!(xs[6].is_finite() && ulps(xs[6], (88.72f32 as f64).exp()) <= 2.0, "{}", xs[6]);
        assert_eq!(xs[7], 0.0);
        // Subnormal results keep their magnitude (absolute error far below f32::MIN_POSITIVE).
        assert!((xs[8] as f64 - (-87.9f32 as f64).exp()).abs() < 1e-44, "{}", xs[8]);
        assert_eq!((xs[9], xs[10]), (1.0, 1.0));
    }
}
