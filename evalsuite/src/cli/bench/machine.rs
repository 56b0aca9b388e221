//! What machine a benchmark ran on, when, and the best matrix-multiply rate it reaches.

use std::time::Instant;

use candle_core::{Device, Tensor};

/// CPU model, core count and SIMD level, e.g. `AMD EPYC, 2 cores, avx2`.
pub fn describe() -> String {
    let machine = tunelab_evalsuite::run::record::Machine::current();
    let model = if machine.cpu.is_empty() { "unknown CPU".to_string() } else { machine.cpu };
    let cores = machine.cpus;
    let simd = if cfg!(target_arch = "x86_64") { simd_level() } else { std::env::consts::ARCH };
    format!("{model}, {cores} cores, {simd}")
}

#[cfg(target_arch = "x86_64")]
fn simd_level() -> &'static str {
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        "avx512 + bf16"
    } else if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::arch::is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "sse"
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn simd_level() -> &'static str {
    "native"
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let (_, stamp) = tunelab_evalsuite::run::now_utc();
    stamp[..10].to_string()
}

/// The best rate (GFLOP/s) of the matrix product training uses, on a training-sized f32
/// problem (`[1024, 576] · [576, 1536]`), best of several runs after a warm-up.
pub fn gemm_peak_gflops() -> anyhow::Result<f64> {
    let (m, k, n) = (1024, 576, 1536);
    let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
    let mut best = f64::INFINITY;
    for i in 0..12 {
        let t = Instant::now();
        let y = tunelab::model::matmul::frozen_matmul(&x, &w)?;
        let s = t.elapsed().as_secs_f64();
        drop(y);
        if i > 1 {
            best = best.min(s);
        }
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}
