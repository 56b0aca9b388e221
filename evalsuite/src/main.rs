//! `tunelab`: the command-line entry point.

mod cli;

/// Training allocates and frees hundreds of megabytes per step; glibc returns such blocks
/// to the kernel at once, so every step paid for fresh zeroed pages (a third of the time,
/// measured with perf). mimalloc, told never to purge freed memory, reuses it instead:
/// 125 → 214 tokens/s on `tunelab bench train`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (between `eager_commit_delay` = 14 and
/// `use_numa_nodes` = 16); libmimalloc-sys does not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory() {
    // A user's MIMALLOC_PURGE_DELAY (read by mimalloc itself) wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: setting a mimalloc option is a plain store; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    cli::run()
}
