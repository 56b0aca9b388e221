//! `tunelab`: the command-line entry point.

mod cli;

/// Training allocates and frees hundreds of megabytes per step; glibc returns such blocks
/// to the kernel at once, so every step paid for fresh zeroed pages (a third of the time,
/// measured with perf). mimalloc, told never to purge freed memory, reuses it instead:
/// 125 → 214 tokens/s on `tunelab bench train`.
///
/// It is built without transparent huge pages (the workspace's `no_thp` feature): mimalloc
/// otherwise asks for them on its 1 GiB arena, and where freed 2 MiB blocks go back to the
/// host (a VM's free page reporting, as on the 2-core Intel machines) touching each block
/// again took ~15 ms, 68 MB/s against 2.6 GB/s for 4 KiB pages. `bench eval` spent half its
/// time zeroing huge pages (152–156 → 226–242 tokens/s without them) and `bench train` 26 of
/// its 74 seconds; steady training steps ran at the same speed either way (BENCHMARKS.md,
/// twelfth session).
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The `VmFlags` of the mapping holding `addr`, from `/proc/self/smaps`.
    fn vm_flags_at(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
            if let Some((lo, hi)) = range.and_then(|(lo, hi)| Some((usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?))) {
                inside = (lo..hi).contains(&addr);
            } else if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// mimalloc must not mark its memory for transparent huge pages (`hg` in `VmFlags`,
    /// what `madvise(MADV_HUGEPAGE)` sets): see the allocator's doc comment.
    #[test]
    fn the_allocator_does_not_ask_for_huge_pages() {
        let block = vec![1u8; 8 << 20];
        let flags = vm_flags_at(block.as_ptr() as usize);
        assert!(!flags.split_whitespace().any(|f| f == "hg"), "mimalloc's arena is marked for huge pages: VmFlags {flags}");
    }
}
