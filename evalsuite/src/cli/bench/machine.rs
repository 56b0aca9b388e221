//! What machine a benchmark ran on, when, and the best matrix-multiply rate it reaches.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

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

/// The best rate (GFLOP/s) of the matrix product training uses, on `device` with weights
/// of `dtype`, best of several runs after a warm-up. On the CPU the problem is
/// training-sized (`[1024, 576] · [576, 1536]`); a GPU finishes that in microseconds, bound
/// by kernel launches rather than arithmetic, so there it is `[4096, 4096] · [4096, 4096]`
/// and each run waits for the device to finish.
pub fn gemm_peak_gflops(device: &Device, dtype: DType) -> anyhow::Result<f64> {
    let (m, k, n) = if device.is_cpu() { (1024, 576, 1536) } else { (4096, 4096, 4096) };
    let random = |rows, cols| -> anyhow::Result<Tensor> { Ok(Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu)?.to_device(device)?) };
    let x = random(m, k)?;
    let w = random(n, k)?.to_dtype(dtype)?;
    let mut best = f64::INFINITY;
    for i in 0..12 {
        let t = Instant::now();
        let y = tunelab::model::matmul::frozen_matmul(&x, &w)?;
        device.synchronize()?;
        let s = t.elapsed().as_secs_f64();
        drop(y);
        if i > 1 {
            best = best.min(s);
        }
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

/// What a table's title adds when tunelab ran off the CPU: the device, and that the
/// reference scripts (which have no GPU option) ran on the CPU, so a ratio compares
/// tunelab on the GPU with the references on this machine's CPU. Empty on the CPU.
pub fn device_note(device: &Device, references: bool) -> String {
    if device.is_cpu() {
        return String::new();
    }
    let name = tunelab::device::device_name(device);
    if references {
        format!("; tunelab on {name}, the reference scripts on the CPU (ratios compare the two)")
    } else {
        format!("; tunelab on {name}")
    }
}
