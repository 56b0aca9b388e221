//! Values shared by every copy of this library in one process, through the process
//! environment. evcxr links a separate copy of the library into each notebook cell, so a
//! `static` exists once per cell; state that must outlive a cell (the interrupt flag, the
//! input limit) is published here instead. Each value is tagged with the pid, so a child
//! process that inherits the variable does not take its parent's value for its own.

/// Sets `var` to `value` for this process (`PID:VALUE`).
pub(crate) fn publish(var: &str, value: &str) {
    std::env::set_var(var, format!("{}:{value}", std::process::id()));
}

/// The value [`publish`] set for `var` in this process, if any.
pub(crate) fn published(var: &str) -> Option<String> {
    let raw = std::env::var(var).ok()?;
    let (pid, value) = raw.split_once(':')?;
    (pid.parse::<u32>().ok()? == std::process::id()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_published_in_this_process_is_read_and_one_inherited_from_a_parent_is_not() {
        const VAR: &str = "TUNELAB_PROCESS_ENV_TEST";
        publish(VAR, "a:b");
        assert_eq!(published(VAR).as_deref(), Some("a:b"));
        std::env::set_var(VAR, format!("{}:x", std::process::id().wrapping_add(1)));
        assert_eq!(published(VAR), None, "another process's value");
        std::env::set_var(VAR, "garbage");
        assert_eq!(published(VAR), None);
        std::env::remove_var(VAR);
    }
}
