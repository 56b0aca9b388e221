//! Seeded mutation fuzzing for readers of untrusted files, shared by the kernel's and the
//! evaluation suite's tests (included by path): mutated copies of a valid file are written
//! and read; a panic or an error that does not name the file fails the test.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use tunelab::splitmix::SplitMix64;

/// Mutated copies of `seed`: bit flips, truncations, inserted and repeated bytes, and bytes
/// that matter to the formats (quotes, brackets, newlines, NUL, huge lengths).
pub fn mutations(seed: &[u8], count: usize, rng_seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64(rng_seed);
    let special: &[&[u8]] = &[b"\"", b"{", b"}", b"[", b"]", b"\n", b",", b"\0", b"\xff\xff\xff\xff\xff\xff\xff\x7f", b"\xff", b"\\u0000", b":", b"="];
    (0..count)
        .map(|_| {
            let mut m = seed.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = if m.is_empty() { 0 } else { rng.below(m.len()) };
                match rng.below(5) {
                    0 if !m.is_empty() => m[at] ^= 1 << rng.below(8),
                    1 => m.truncate(at),
                    2 => {
                        let s = special[rng.below(special.len())];
                        m.splice(at..at, s.iter().copied());
                    }
                    3 if !m.is_empty() => {
                        let end = (at + 1 + rng.below(16)).min(m.len());
                        let chunk = m[at..end].to_vec();
                        m.splice(at..at, chunk);
                    }
                    _ if !m.is_empty() => m[at] = rng.next_u64() as u8,
                    _ => {}
                }
            }
            m
        })
        .collect()
}

/// Runs `read` on each of `count` mutations of `seed` written to `path`; fails on a panic
/// (naming the case) or an error that names neither the file nor another file of its
/// folder (a mutated suite may point at a rubric that is not there: that file is named).
pub fn fuzz<T>(path: &Path, seed: &[u8], count: usize, read: impl Fn(&Path) -> Result<T, String>) {
    let name = path.file_name().expect("a file path").to_string_lossy().into_owned();
    let folder = path.parent().expect("a file in a folder").to_string_lossy().into_owned();
    for (i, bytes) in mutations(seed, count, 7).into_iter().enumerate() {
        std::fs::write(path, &bytes).expect("write the mutated file");
        match catch_unwind(AssertUnwindSafe(|| read(path))) {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => assert!(
                message.contains(&name) || message.contains(&folder),
                "case {i}: the error does not name {name}: {message}\ninput: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(_) => panic!("case {i}: reading {name} panicked; input: {:?}", String::from_utf8_lossy(&bytes)),
        }
    }
}
