//! Installing and removing the `tunelab` kernelspec. The kernelspec names the library
//! cells compile against (`--lib DIR` in `argv`, see [`crate::library`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::library;

/// Where the kernelspec goes (like `jupyter kernelspec install`).
#[derive(Debug, Args)]
pub struct Location {
    /// In the user's Jupyter data directory (default).
    #[arg(long, conflicts_with_all = ["sys_prefix", "prefix"])]
    user: bool,
    /// In the current Python environment (`sys.prefix` of `python3`).
    #[arg(long, conflicts_with = "prefix")]
    sys_prefix: bool,
    /// Under PREFIX/share/jupyter/kernels.
    #[arg(long)]
    prefix: Option<PathBuf>,
}

/// Options of `install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    location: Location,
    /// The tunelab library's directory (a checkout's `kernel/`) that cells compile against;
    /// default `$TUNELAB_KERNEL_LIB`, else the checkout this binary was built from.
    #[arg(long, value_name = "DIR")]
    lib: Option<PathBuf>,
    /// Only write the kernelspec; the first kernel then compiles the library itself
    /// (minutes on a new machine) instead of this command doing it now.
    #[arg(long)]
    no_warm: bool,
}

const NAME: &str = "tunelab";

impl Location {
    fn kernels_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.prefix {
            return Ok(p.join("share/jupyter/kernels"));
        }
        if self.sys_prefix {
            let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
            let out = std::process::Command::new(&python)
                .args(["-c", "import sys; print(sys.prefix)"])
                .output()
                .with_context(|| format!("running {python} to find sys.prefix"))?;
            anyhow::ensure!(out.status.success(), "{python} failed to print sys.prefix");
            return Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("share/jupyter/kernels"));
        }
        Ok(jupyter_zmq_client::dirs::user_data_dir()?.join("kernels"))
    }
}

/// Writes `kernels/tunelab/kernel.json`, refusing a library location that does not hold
/// the library, then (unless `--no-warm`) compiles the library into evcxr's cache.
pub fn install(args: &InstallArgs) -> anyhow::Result<()> {
    let lib = library::for_install(args.lib.as_deref())?;
    let dir = args.location.kernels_dir()?.join(NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe()?;
    let path = dir.join("kernel.json");
    std::fs::write(&path, serde_json::to_string_pretty(&kernel_spec(&exe, &lib))?).with_context(|| format!("writing {}", path.display()))?;
    println!("installed kernelspec {NAME} in {} (library: {})", dir.display(), lib.display());
    if !args.no_warm {
        crate::engine::warm(&lib)?;
    }
    Ok(())
}

/// The kernelspec of `exe` preloading the library in `lib`.
fn kernel_spec(exe: &Path, lib: &Path) -> serde_json::Value {
    serde_json::json!({
        "argv": [exe, "--control-file", "{connection_file}", "--lib", lib],
        "display_name": "tunelab (Rust)",
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": {"debugger": false},
    })
}

/// Removes the kernelspec directory.
pub fn uninstall(loc: &Location) -> anyhow::Result<()> {
    let dir = loc.kernels_dir()?.join(NAME);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("removed {}", dir.display());
    } else {
        println!("no kernelspec at {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_refuses_a_location_without_the_library() {
        let prefix = std::env::temp_dir().join(format!("tunelab-install-{}", std::process::id()));
        let not_lib = prefix.join("not-a-checkout");
        std::fs::create_dir_all(&not_lib).unwrap();
        let args =
            InstallArgs { location: Location { user: false, sys_prefix: false, prefix: Some(prefix.clone()) }, lib: Some(not_lib.clone()), no_warm: true };
        let e = install(&args).unwrap_err().to_string();
        assert!(e.contains(&not_lib.display().to_string()) && e.contains(library::ENV), "{e}");
        // Nothing was written.
        assert!(!prefix.join("share").exists());
        std::fs::remove_dir_all(&prefix).unwrap();
    }

    #[test]
    fn the_kernelspec_names_the_library() {
        let spec = kernel_spec(Path::new("/bin/k"), Path::new("/src/tunelab/kernel"));
        assert_eq!(spec["argv"], serde_json::json!(["/bin/k", "--control-file", "{connection_file}", "--lib", "/src/tunelab/kernel"]));
    }
}
