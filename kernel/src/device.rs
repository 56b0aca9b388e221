//! Where tensors live: `cpu`, or an NVIDIA GPU (`cuda`, `cuda:N`) in builds with
//! `--features cuda` (`scripts/build-cuda`), and how much memory that place has left.

use candle_core::Device;

use crate::error::{Error, Result};

/// The device named by `spec`: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.to_ascii_lowercase().strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::InvalidArgument(format!("device {spec:?}: expected cpu, cuda or cuda:N")))?,
        None => return Err(Error::InvalidArgument(format!("device {spec:?}: expected cpu, cuda or cuda:N"))),
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::InvalidArgument(format!(
            "device {spec:?}: this tunelab was built without CUDA; build it with `cargo build --release --features cuda` (scripts/build-cuda installs the toolkit)"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::InvalidArgument(format!("device {spec:?}: cannot open GPU {ordinal}: {e}")))
}

/// A short name for `device`: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Bytes `device` can still give this process: the CPU's `MemAvailable` (Linux), a GPU's
/// free memory as its driver reports it; `None` where it cannot be read.
pub fn available_bytes(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => crate::train::available_memory_bytes(),
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => gpu.cuda_stream().context().mem_get_info().ok().map(|(free, _total)| free as u64),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_names_are_refused() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" CPU ").unwrap().is_cpu());
        assert_eq!(device_name(&Device::Cpu), "cpu");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda0", ""] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let e = parse_device("cuda:1").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }

    #[test]
    fn the_cpu_reports_available_memory() {
        assert!(available_bytes(&Device::Cpu).is_some_and(|b| b > 0));
    }
}
