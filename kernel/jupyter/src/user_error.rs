//! Noticing cells that fail without evcxr reporting it: an early return through `?`, and a
//! panic that evcxr caught (`:preserve_vars_on_panic`). In both cases evcxr's generated code
//! prints a private control line on the code-running subprocess's stdout
//! (`EVCXR_ERROR_OCCURRED`, `EVCXR_PANIC_NOTIFICATION`) and evcxr reports success. In that
//! subprocess (this same binary, started by evcxr) [`watch_stdout`] puts a pipe in front of
//! stdout that copies every line through unchanged and, on seeing one of those lines,
//! first writes the matching marker to stderr, where the kernel's stderr reader turns it
//! into an error reply. The markers carry this kernel's secret [`nonce`], so a cell that
//! prints text shaped like a panic message or a marker does not fail, and failure is read
//! from what the subprocess's own generated code reported, not from text.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::OnceLock;

/// The line evcxr prints on the subprocess's stdout after a `?` error.
const USER_ERROR_OCCURRED: &str = "EVCXR_ERROR_OCCURRED";
/// The line evcxr's generated code prints when it caught a panic in the cell.
const PANIC_NOTIFICATION: &str = "EVCXR_PANIC_NOTIFICATION";
/// The line evcxr's runtime prints on the subprocess's stdout after running a cell's code.
const EXECUTION_COMPLETE: &str = "EVCXR_EXECUTION_COMPLETE";

/// The environment variable holding the kernel's secret (inherited by the subprocess; the
/// library's `notebook::markers::NONCE_ENV`).
pub const NONCE_ENV: &str = "TUNELAB_KERNEL_NONCE";

/// evcxr's environment variable marking its code-running subprocess.
const RUNTIME_VAR: &str = "EVCXR_IS_RUNTIME";

/// How a cell failed, as signalled on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An early return through `?`.
    UserError,
    /// A panic evcxr caught.
    Panic,
}

/// Creates this kernel's secret (random, per kernel process) unless it was inherited, and
/// puts it in the environment so that evcxr's subprocess gets it. Call first in `main`,
/// before any thread starts.
pub fn init_nonce() {
    if std::env::var_os(NONCE_ENV).is_none() {
        std::env::set_var(NONCE_ENV, random_hex());
    }
}

/// This kernel's secret.
pub fn nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| std::env::var(NONCE_ENV).unwrap_or_default())
}

/// What every failure marker starts with, before its tag.
const MARKER_PREFIX: &str = "\u{1e}tunelab-";

impl Failure {
    fn tag(self) -> &'static str {
        match self {
            Failure::UserError => "user-error",
            Failure::Panic => "panic",
        }
    }
}

/// The stderr line that reports `failure` for the running cell.
pub fn marker(failure: Failure) -> String {
    format!("{MARKER_PREFIX}{} {}", failure.tag(), nonce())
}

/// The line the subprocess writes on stderr when a cell's code has finished, before evcxr's
/// own end-of-execution line on stdout: everything the cell wrote to stderr comes before it,
/// so the kernel knows when it has seen all of a cell's stderr output.
pub fn end_marker() -> String {
    format!("{MARKER_PREFIX}end {}", nonce())
}

/// Whether `line` is this kernel's [`end_marker`].
pub fn is_end_marker(line: &str) -> bool {
    line.strip_prefix(MARKER_PREFIX).and_then(|rest| rest.strip_prefix("end ")) == Some(nonce())
}

/// The failure a stderr line reports, if it is one of this kernel's markers (checked
/// without building a string: the kernel calls it for every stderr line).
pub fn parse_marker(line: &str) -> Option<Failure> {
    let (tag, secret) = line.strip_prefix(MARKER_PREFIX)?.split_once(' ')?;
    if secret != nonce() {
        return None;
    }
    [Failure::UserError, Failure::Panic].into_iter().find(|f| f.tag() == tag)
}

/// 128 random bits as hex, from the OS.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// In evcxr's subprocess, routes stdout through the watcher; elsewhere does nothing.
pub fn watch_stdout() {
    if std::env::var_os(RUNTIME_VAR).is_none() {
        return;
    }
    if let Err(e) = install() {
        eprintln!("tunelab-kernel: cannot watch for `?` errors and panics ({e}); such cells will report success");
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
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        // Before the line reaches evcxr: the kernel checks for the marker once the cell ends.
        if text == USER_ERROR_OCCURRED.as_bytes() {
            eprintln!("{}", marker(Failure::UserError));
        } else if text == PANIC_NOTIFICATION.as_bytes() {
            eprintln!("{}", marker(Failure::Panic));
        } else if text == EXECUTION_COMPLETE.as_bytes() {
            // The cell's own writes to stderr happened before this line was printed. (Not on
            // stdout: evcxr waits until its stdout lines are consumed, and nothing consumes
            // them while its context starts.)
            eprintln!("{}", end_marker());
        }
        if out.write_all(&line).and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}
