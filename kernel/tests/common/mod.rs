//! Helpers shared by the kernel's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root (the workspace holding `kernel/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("kernel/ has a parent").to_path_buf()
}

/// The fetched SmolLM2 GGUF. Tests that need it fail loudly when it is missing: they never skip.
pub fn smollm_path() -> PathBuf {
    let dir = std::env::var_os("TUNELAB_MODELS").map(PathBuf::from).unwrap_or_else(|| repo_root().join("models"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "the real model is missing: {} does not exist. Run scripts/fetch-models first (tests never skip it).", path.display());
    path
}

/// Parses a recorded test-vector file under `tests/vectors/`.
pub fn vectors(name: &str) -> serde_json::Value {
    let path = repo_root().join("tests/vectors").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// A fresh scratch directory under the system temp dir, unique per call.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tunelab-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A JSON array of token ids as `u32`s.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("a list of ids").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}
