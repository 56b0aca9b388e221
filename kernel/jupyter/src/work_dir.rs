//! A persistent work directory for evcxr, so that a kernel starts warm.
//!
//! evcxr builds cells in a crate directory of its own, by default a fresh temporary one
//! per kernel. Cargo's target directory lives inside it, so every kernel start rebuilt the
//! library's hundred dependencies (from evcxr's compiler cache, but still about 40 s of
//! cargo and linking on 2 cores). Each kernel here claims one of a few numbered
//! directories (see [`root`]) instead, held with an exclusive file lock for the
//! kernel's lifetime: one kernel at a time always reuses the first, with its target
//! directory intact, and kernels running side by side each get their own.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// The environment variable evcxr reads for its crate directory.
const EVCXR_TMPDIR: &str = "EVCXR_TMPDIR";

/// How many kernels can run side by side with a directory of their own; more use evcxr's
/// temporary directories.
const SLOTS: usize = 8;

/// The directory holding the numbered work directories: `tunelab-kernel-<uid>` in the
/// system's temporary directory.
///
/// Why there and not in a cache under the home directory: rustc gives each cell library a
/// runpath to Rust's standard library relative to `target/…/debug/deps`, and evcxr loads
/// the library from one directory up. From a directory whose only common ancestor with the
/// toolchain is `/`, the relative path climbs to `/` (where a surplus `..` stays put) and
/// still arrives; from under the home directory, next to `~/.rustup`, it misses by one
/// level and the library fails to load.
fn root() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("tunelab-kernel-{uid}"))
}

/// Claims the first free work directory and points evcxr at it. Call before any thread
/// starts (it sets an environment variable). A user's own `EVCXR_TMPDIR` wins; when no
/// directory can be claimed, evcxr keeps its temporary one. Returns the directory.
pub fn claim() -> Option<PathBuf> {
    if std::env::var_os(EVCXR_TMPDIR).is_some() {
        return None;
    }
    let root = root();
    std::fs::create_dir_all(&root).ok()?;
    // Private to this user (the directory is in a shared temporary directory).
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700)).ok()?;
    write_dependency_profile(&root);
    for slot in 0..SLOTS {
        let dir = root.join(format!("slot-{slot}"));
        let Ok(lock) = OpenOptions::new().create(true).truncate(false).write(true).open(root.join(format!("slot-{slot}.lock"))) else { continue };
        if lock.try_lock().is_ok() && std::fs::create_dir_all(&dir).is_ok() {
            hold(lock);
            // Called from `main` before any other thread exists.
            std::env::set_var(EVCXR_TMPDIR, &dir);
            return Some(dir);
        }
    }
    None
}

/// Cargo settings for every crate a cell depends on (candle, gemm, tunelab …), read by
/// cargo from the work directories' parent: built like release code. The cell's own crate
/// keeps evcxr's profile (`:opt`), so a cell compiles unoptimized and fast while the
/// library it calls runs at full speed.
const DEPENDENCY_PROFILE: &str = "# Written by tunelab-kernel: the crates notebook cells depend on are built like release
# code (debug assertions and overflow checks made training 2x slower); the cells' own
# crate follows evcxr's `:opt`.
[profile.dev.package.\"*\"]
opt-level = 3
debug-assertions = false
overflow-checks = false
";

/// Whether the dependency profile is in place for this kernel's work directory.
static DEPENDENCY_PROFILE_WRITTEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Writes [`DEPENDENCY_PROFILE`] to `root/.cargo/config.toml`.
fn write_dependency_profile(root: &std::path::Path) {
    let dir = root.join(".cargo");
    let path = dir.join("config.toml");
    // Kernels starting side by side may both write it: each writes its own file and renames
    // it into place, so cargo never reads half a file.
    let fresh = dir.join(format!("config.toml.{}", std::process::id()));
    let written = std::fs::read_to_string(&path).is_ok_and(|s| s == DEPENDENCY_PROFILE)
        || (std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&fresh, DEPENDENCY_PROFILE).and_then(|_| std::fs::rename(&fresh, &path)).is_ok());
    let _ = DEPENDENCY_PROFILE_WRITTEN.set(written);
}

/// Whether cells' dependencies are built like release code by the work directory's cargo
/// configuration; when not (a user's own `EVCXR_TMPDIR`, or nothing could be claimed), the
/// engine sets the same profile for everything through cargo's environment instead.
pub fn dependencies_optimized() -> bool {
    DEPENDENCY_PROFILE_WRITTEN.get().copied().unwrap_or(false)
}

/// Keeps the lock for the rest of the process (the OS releases it when the process ends).
fn hold(lock: File) {
    static HELD: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    let _ = HELD.set(lock);
}
