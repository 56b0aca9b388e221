//! Cancellation: the process-wide interrupt flag the trainer watches by default. The kernel
//! sends SIGINT to the process running cells; the handler sets this flag, and the trainer
//! saves a checkpoint and returns at its next step. (`notebook` re-exports both functions
//! under the same names for notebook code.)
//!
//! evcxr links this library into every cell's shared object separately, so a plain `static`
//! would exist once per cell and the handler installed by one cell would set a flag no other
//! cell sees. The flag's address is therefore published once per process through
//! `process_env` (the environment, tagged with the pid so a child process never trusts it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

const ENV: &str = "TUNELAB_INTERRUPT_FLAG";

/// The flag set by SIGINT once [`install_interrupt_handler`] has run.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static LOCAL: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    LOCAL
        .get_or_init(|| {
            match crate::process_env::published(ENV).and_then(|addr| usize::from_str_radix(&addr, 16).ok()) {
                // SAFETY: the address came from `Arc::into_raw` in this process, and that
                // reference is never released, so the allocation lives as long as the process.
                Some(addr) => unsafe {
                    Arc::increment_strong_count(addr as *const AtomicBool);
                    Arc::from_raw(addr as *const AtomicBool)
                },
                None => {
                    let flag = Arc::new(AtomicBool::new(false));
                    let addr = Arc::into_raw(flag.clone()) as usize;
                    crate::process_env::publish(ENV, &format!("{addr:x}"));
                    flag
                }
            }
        })
        .clone()
}

/// Routes SIGINT to [`interrupt_flag`] instead of killing the process (idempotent).
pub fn install_interrupt_handler() {
    let flag = interrupt_flag();
    // A second installation (another cell's copy of this library) fails harmlessly.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
}
