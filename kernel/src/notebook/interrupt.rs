//! A process-wide interrupt flag. The kernel sends SIGINT to the process running cells; the
//! handler sets this flag, and the trainer (which watches it by default) saves a checkpoint
//! and returns at its next step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The flag set by SIGINT once [`install_interrupt_handler`] has run.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone()
}

/// Routes SIGINT to [`interrupt_flag`] instead of killing the process (idempotent).
pub fn install_interrupt_handler() {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let flag = interrupt_flag();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).is_ok()
    });
}
