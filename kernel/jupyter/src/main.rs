//! `tunelab-kernel`: the Jupyter kernel for tunelab's Rust notebooks.
//!
//! Cells are compiled and run by the evcxr engine with the `tunelab` library preloaded.
//! The kernel speaks the Jupyter wire protocol over ZeroMQ (`jupyter-zmq-client`), streams
//! stdout/stderr while a cell runs, and turns tunelab's live-display lines into
//! `display_data` / `update_display_data` messages so training charts redraw in place.

mod bridge;
mod completeness;
mod engine;
mod history;
mod install;
mod library;
mod server;
mod user_error;
mod value_display;
mod wire;
mod work_dir;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc for this process: evcxr's rust-analyzer re-verifies the library's whole crate graph
/// for every cell that defines a variable, and with mimalloc that took 0.118 s of the kernel's
/// CPU per warm cell instead of 0.144 s with glibc's allocator (BENCHMARKS.md, ninth session).
/// Cells are separate libraries with their own allocator, so their code is not affected.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tunelab Jupyter kernel.
#[derive(Debug, Parser)]
#[command(name = "tunelab-kernel", version, about)]
struct Cli {
    /// Run as a kernel with this Jupyter connection file (what the kernelspec passes).
    #[arg(long)]
    control_file: Option<PathBuf>,
    /// The tunelab library's directory to preload (what the kernelspec passes);
    /// `$TUNELAB_KERNEL_LIB` overrides it.
    #[arg(long, value_name = "DIR")]
    lib: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the `tunelab` kernelspec (display name "tunelab (Rust)").
    Install(install::InstallArgs),
    /// Remove the `tunelab` kernelspec.
    Uninstall(install::Location),
}

fn main() -> anyhow::Result<()> {
    // Before any thread: the secret the subprocess inherits (it keeps the kernel's).
    user_error::init_nonce();
    // When evcxr starts this binary as its code-running subprocess, this never returns.
    user_error::watch_stdout();
    evcxr::runtime_hook();
    tune_cell_allocator();
    work_dir::claim();
    let cli = Cli::parse();
    match (cli.command, cli.control_file) {
        (Some(Command::Install(args)), _) => install::install(&args),
        (Some(Command::Uninstall(loc)), _) => install::uninstall(&loc),
        (None, Some(file)) => server::run(&file, library::at_run_time(cli.lib.as_deref())),
        (None, None) => anyhow::bail!("pass --control-file FILE (Jupyter does), or use `install` / `uninstall`"),
    }
}

/// glibc malloc settings inherited by the code-running subprocess evcxr starts from this
/// process, where notebook cells (and their training steps) run with the system allocator.
/// A training step allocates and frees buffers of many megabytes; by default glibc serves
/// each from a fresh `mmap` whose pages fault in zeroed every time (a third of a step, as
/// measured for the CLI before it moved to mimalloc). Serving buffers up to 32 MiB from the
/// heap and trimming it only past 256 MiB lets them be reused. A user's own `MALLOC_*`
/// settings win.
fn tune_cell_allocator() {
    for (name, value) in [("MALLOC_MMAP_THRESHOLD_", "33554432"), ("MALLOC_TRIM_THRESHOLD_", "268435456"), ("MALLOC_TOP_PAD_", "67108864")] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}
