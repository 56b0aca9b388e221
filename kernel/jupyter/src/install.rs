//! Installing and removing the `tunelab` kernelspec.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

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

const NAME: &str = "tunelab";

impl Location {
    fn kernels_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.prefix {
            return Ok(p.join("share/jupyter/kernels"));
        }
        if self.sys_prefix {
            let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
            let out = std::process::Command::new(&python).args(["-c", "import sys; print(sys.prefix)"]).output().with_context(|| format!("running {python} to find sys.prefix"))?;
            anyhow::ensure!(out.status.success(), "{python} failed to print sys.prefix");
            return Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("share/jupyter/kernels"));
        }
        Ok(jupyter_zmq_client::dirs::user_data_dir()?.join("kernels"))
    }
}

/// Writes `kernels/tunelab/kernel.json`.
pub fn install(loc: &Location) -> anyhow::Result<()> {
    let dir = loc.kernels_dir()?.join(NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe()?;
    let spec = serde_json::json!({
        "argv": [exe, "--control-file", "{connection_file}"],
        "display_name": "tunelab (Rust)",
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": {"debugger": false},
    });
    let path = dir.join("kernel.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec)?).with_context(|| format!("writing {}", path.display()))?;
    println!("installed kernelspec {NAME} in {}", dir.display());
    Ok(())
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
