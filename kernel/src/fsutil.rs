//! Files users keep and files users give. Writing never leaves a half-written file
//! behind: write to a temporary file beside the target, fsync, rename over it, fsync the
//! folder. Reading input (datasets, suites, rubrics, predictions, caches) is bounded, so a
//! device or pipe that never ends (`/dev/zero`, a FIFO) is an error, not a machine out of
//! memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary path used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Input files larger than this are refused unless the limit is raised: 1 GiB.
pub const DEFAULT_INPUT_LIMIT: u64 = 1 << 30;

/// The environment variable that sets the input limit, in MiB.
pub const INPUT_LIMIT_ENV: &str = "TUNELAB_MAX_INPUT_MB";

/// Where [`set_input_limit`] publishes the limit for the whole process (`process_env`): evcxr
/// links this library into every notebook cell separately, so a `static` would exist once
/// per cell and a limit set in one cell would not reach the code of later cells.
const PUBLISHED_LIMIT_ENV: &str = "TUNELAB_INPUT_LIMIT_SET";

/// Sets the largest input file [`read_input`] accepts, in bytes, for this process
/// (the CLI's `--max-input-mb`; in a notebook, for the cells that follow too).
pub fn set_input_limit(bytes: u64) {
    crate::process_env::publish(PUBLISHED_LIMIT_ENV, &bytes.max(1).to_string());
}

/// The largest input file [`read_input`] accepts: set by [`set_input_limit`] (in this
/// process, from any notebook cell), else `TUNELAB_MAX_INPUT_MB`, else [`DEFAULT_INPUT_LIMIT`].
pub fn input_limit() -> u64 {
    published_limit().unwrap_or_else(|| {
        std::env::var(INPUT_LIMIT_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|&mb| mb > 0).map_or(DEFAULT_INPUT_LIMIT, |mb| mb << 20)
    })
}

/// The limit [`set_input_limit`] published in this process, if any.
fn published_limit() -> Option<u64> {
    crate::process_env::published(PUBLISHED_LIMIT_ENV)?.parse::<u64>().ok().filter(|&b| b > 0)
}

/// Reads the whole of `path`, refusing with [`Error::InputTooLarge`] past [`input_limit`]
/// bytes. Reads at most one byte past the limit whatever the file is.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    read_bounded(path, input_limit())
}

/// [`read_input`] as UTF-8 text without a BOM (an error names the file, and the line of a
/// bad byte; see [`decode_utf8`]).
pub fn read_input_text(path: &Path) -> Result<String> {
    let bytes = read_input(path)?;
    let text = decode_utf8(path, &bytes)?;
    Ok(if text.len() == bytes.len() { String::from_utf8(bytes).expect("checked as UTF-8") } else { text.to_string() })
}

/// The text of an input file read as bytes: UTF-8 without its BOM, or an error naming
/// `path` and the line of the first bad byte (UTF-16 is named as such).
pub fn decode_utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Error::InvalidArgument(format!("{}: the file is UTF-16 encoded; save it as UTF-8", path.display())));
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        Error::InvalidArgument(format!("{}:{line}:{column}: invalid UTF-8 (byte 0x{:02x}); save the file as UTF-8", path.display(), bytes[e.valid_up_to()]))
    })
}

/// Reads `path` whole when it holds at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::InputTooLarge { path: path.to_path_buf(), limit });
    }
    Ok(bytes)
}

/// Makes a rename or a new entry in `dir` durable (fsync of the folder itself).
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates (or truncates) `path`, writes `bytes` and fsyncs the file: the first half of an
/// atomic write, for callers that check the written file before renaming it into place.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename + fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = write_synced(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))?;
    sync_dir(parent_dir(path))
}

/// Serialises `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::InvalidArgument(format!("cannot serialise {}: {e}", path.display())))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Saves tensors as safetensors at `path` atomically.
pub fn save_safetensors_atomic(path: &Path, tensors: &std::collections::HashMap<String, candle_core::Tensor>) -> Result<()> {
    let tmp = temp_path(path);
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| Error::bad_model(path, format!("cannot write safetensors: {e}")))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(parent_dir(path))
}

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Puts the finished directory `staged` at `target`, replacing what is there, so that
/// `target` is at every moment either the complete old directory or the complete new one.
/// On Linux the two are exchanged in one step (`renameat2(RENAME_EXCHANGE)`) and the old
/// one, now at `staged`, is removed; elsewhere (or on file systems without the exchange)
/// the old one is renamed aside first and [`recover_dir`] puts it back if a crash comes
/// between the two renames. The folder is fsynced after each rename.
pub fn install_dir(staged: &Path, target: &Path) -> Result<()> {
    let parent = parent_dir(target);
    if !target.exists() {
        std::fs::rename(staged, target).map_err(|e| Error::io(target, e))?;
        return sync_dir(parent);
    }
    if !exchange(staged, target)? {
        let aside = sibling(target, "old");
        std::fs::rename(target, &aside).map_err(|e| Error::io(target, e))?;
        sync_dir(parent)?;
        std::fs::rename(staged, target).map_err(|e| Error::io(target, e))?;
        sync_dir(parent)?;
        return std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e));
    }
    sync_dir(parent)?;
    std::fs::remove_dir_all(staged).map_err(|e| Error::io(staged, e))
}

/// `.NAME.KIND-PID` beside `target`: a staging (`partial`) or set-aside (`old`) directory
/// of this process.
pub fn sibling(target: &Path, kind: &str) -> PathBuf {
    parent_dir(target).join(format!("{}{kind}-{}", sibling_prefix(target), std::process::id()))
}

/// `.NAME.`: how every sibling of `target` begins.
fn sibling_prefix(target: &Path) -> String {
    format!(".{}.", target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// Cleans up after processes that died while writing `target`: their staging directories
/// (`.NAME.partial-PID`) are removed, and a set-aside old directory (`.NAME.old-PID`) is
/// renamed back when `target` is missing (removed otherwise). Directories of processes
/// still running are left alone. Returns the paths removed.
pub fn recover_dir(target: &Path) -> Result<Vec<PathBuf>> {
    let prefix = sibling_prefix(target);
    let parent = parent_dir(target);
    let Ok(entries) = std::fs::read_dir(parent) else { return Ok(Vec::new()) };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else { continue };
        let Some((kind, pid)) = rest.rsplit_once('-') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !matches!(kind, "partial" | "old") || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        if kind == "old" && !target.exists() {
            std::fs::rename(&path, target).map_err(|e| Error::io(target, e))?;
            sync_dir(parent)?;
        } else {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Whether a process with this id is running (our own counts).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Exchanges `a` and `b` atomically; `Ok(false)` when the platform or file system cannot.
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgument(format!("{} contains a NUL byte", p.display())));
        let (ca, cb) = (c(a)?, c(b)?);
        // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them like rename(2).
        let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(Error::io(b, err)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_published_in_this_process_applies_and_one_inherited_from_a_parent_does_not() {
        // As another copy of this library (an earlier notebook cell) publishes it.
        std::env::set_var(PUBLISHED_LIMIT_ENV, format!("{}:4096", std::process::id()));
        assert_eq!(published_limit(), Some(4096));
        std::env::set_var(PUBLISHED_LIMIT_ENV, format!("{}:4096", std::process::id().wrapping_add(1)));
        assert_eq!(published_limit(), None, "another process's setting");
        std::env::set_var(PUBLISHED_LIMIT_ENV, "garbage");
        assert_eq!(published_limit(), None);
        std::env::remove_var(PUBLISHED_LIMIT_ENV);
    }
}
