//! Where the `tunelab` library that cells compile against lives (the directory holding
//! package `tunelab-kernel`, i.e. a checkout's `kernel/`). It is resolved when the kernel
//! runs, not when it is built, so an installed binary does not depend on the checkout it
//! was built from: `install` writes it into the kernelspec (`--lib DIR` in `argv`), and
//! `$TUNELAB_KERNEL_LIB` overrides it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The environment variable that names the library's directory, over the kernelspec's.
pub const ENV: &str = "TUNELAB_KERNEL_LIB";

/// The package whose directory the kernel preloads with `:dep`.
const PACKAGE: &str = "tunelab-kernel";

/// The library's directory in the checkout this binary was built from (it may be gone).
pub fn build_time_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory to preload from when the kernel runs: `$TUNELAB_KERNEL_LIB`, else the
/// kernelspec's `--lib` (`from_spec`), else the build-time checkout.
pub fn at_run_time(from_spec: Option<&Path>) -> PathBuf {
    match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => from_spec.map_or_else(build_time_dir, Path::to_path_buf),
    }
}

/// The directory `install` writes into the kernelspec: `--lib` (`given`), else
/// `$TUNELAB_KERNEL_LIB`, else the build-time checkout — checked to hold the library and
/// made absolute.
pub fn for_install(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let from_env = std::env::var_os(ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = given.map(Path::to_path_buf).or(from_env).unwrap_or_else(build_time_dir);
    check(&dir)
}

/// `dir` made absolute, when it holds the library: a `Cargo.toml` whose `[package]` is
/// named `tunelab-kernel`. Otherwise an error naming the directory and [`ENV`].
pub fn check(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let holds = std::fs::read_to_string(&manifest).ok().and_then(|text| package_name(&text)).is_some_and(|name| name == PACKAGE);
    anyhow::ensure!(
        holds,
        "{} does not hold the tunelab library (no Cargo.toml there declaring package `{PACKAGE}`); pass --lib DIR or set {ENV} to the `kernel/` directory of a tunelab checkout",
        dir.display()
    );
    std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))
}

/// The `name` of a Cargo manifest's `[package]` section (a plain `name = "…"` line).
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "name" {
                    return Some(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tunelab-jupyter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_a_directory_without_the_library() {
        let empty = scratch("empty");
        let e = check(&empty).unwrap_err().to_string();
        assert!(e.contains(&empty.display().to_string()) && e.contains(ENV) && e.contains("tunelab-kernel"), "{e}");

        let other = scratch("other");
        std::fs::write(other.join("Cargo.toml"), "[package]\nname = \"tunelab-evalsuite\"\n\n[dependencies]\nname = \"x\"\n").unwrap();
        let e = check(&other).unwrap_err().to_string();
        assert!(e.contains(&other.display().to_string()) && e.contains(ENV), "{e}");
        for dir in [empty, other] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn accepts_the_library_and_makes_it_absolute() {
        let lib = scratch("lib");
        std::fs::write(lib.join("Cargo.toml"), "[package]\nname = \"tunelab-kernel\"\nversion = \"0.1.0\"\n").unwrap();
        assert_eq!(check(&lib.join("../").join(lib.file_name().unwrap())).unwrap(), std::fs::canonicalize(&lib).unwrap());
        std::fs::remove_dir_all(lib).unwrap();
        // This checkout's own library.
        assert_eq!(package_name(&std::fs::read_to_string(build_time_dir().join("Cargo.toml")).unwrap()).as_deref(), Some(PACKAGE));
    }
}
