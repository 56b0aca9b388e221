//! Noticing cells that end early through `?`.
//!
//! evcxr wraps a cell in a function returning `Result`; when a `?` returns an error it prints
//! the error on stderr and a private line on stdout, which the engine consumes while still
//! reporting success. In the code-running subprocess (this same binary, started by evcxr)
//! [`watch_stdout`] puts a pipe in front of stdout that copies every line through unchanged
//! and, on seeing that private line, first writes [`MARKER`] to stderr, where the kernel's
//! stderr reader turns it into an error reply.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};

/// The line evcxr prints on the subprocess's stdout after a `?` error.
const USER_ERROR_OCCURRED: &str = "EVCXR_ERROR_OCCURRED";

/// The stderr line that tells the kernel the running cell failed through `?`.
pub const MARKER: &str = "\u{1e}tunelab-user-error";

/// evcxr's environment variable marking its code-running subprocess.
const RUNTIME_VAR: &str = "EVCXR_IS_RUNTIME";

/// In evcxr's subprocess, routes stdout through the watcher; elsewhere does nothing.
pub fn watch_stdout() {
    if std::env::var_os(RUNTIME_VAR).is_none() {
        return;
    }
    if let Err(e) = install() {
        eprintln!("tunelab-kernel: cannot watch for `?` errors ({e}); such cells will report success");
    }
}

fn install() -> std::io::Result<()> {
    let (reader, writer) = std::io::pipe()?;
    // SAFETY: plain descriptor calls on descriptors this process owns; `dup` gives the real
    // stdout a new descriptor that only the copying thread writes to.
    let real_stdout = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(writer.as_raw_fd(), 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::File::from_raw_fd(fd)
    };
    drop(writer);
    std::thread::Builder::new().name("tunelab-stdout".into()).spawn(move || copy_lines(BufReader::new(reader), real_stdout))?;
    Ok(())
}

fn copy_lines(mut reader: impl BufRead, mut out: std::fs::File) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.strip_suffix(b"\n").unwrap_or(&line) == USER_ERROR_OCCURRED.as_bytes() {
            // Before the line reaches evcxr: the kernel checks for the marker once the cell ends.
            eprintln!("{MARKER}");
        }
        if out.write_all(&line).and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}
