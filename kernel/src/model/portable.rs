//! Which implementation the model's ops run: this crate's CPU kernels (fused ops with
//! hand-written backward passes, packed and bf16 weight panels, per-sequence decoding), or
//! device-generic compositions of candle ops, which is what runs on a GPU (`--device
//! cuda`), where those kernels do not exist.
//!
//! [`set_portable_ops`] makes a CPU run the device-generic compositions too, so the code a
//! GPU runs is checked against the CPU kernels on any machine (`kernel/tests/portable.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

/// Set by [`set_portable_ops`]: the CPU takes the device-generic path too.
static PORTABLE: AtomicBool = AtomicBool::new(false);

/// Makes every op in this process take the device-generic compositions a GPU runs (`true`),
/// or this crate's CPU kernels where they apply (`false`, the default). Applies to models
/// built or converted after the call as well as to ops run after it.
pub fn set_portable_ops(on: bool) {
    PORTABLE.store(on, Ordering::SeqCst);
}

/// Whether [`set_portable_ops`] asked for the device-generic path.
pub fn portable_ops() -> bool {
    PORTABLE.load(Ordering::SeqCst)
}

/// Whether this crate's CPU kernels may run on `t`: it lives on the CPU and the
/// device-generic path was not asked for.
pub fn cpu_kernels(t: &Tensor) -> bool {
    t.device().is_cpu() && !portable_ops()
}
