//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("evalsuite/ has a parent").to_path_buf()
}

/// The fetched SmolLM2 GGUF; fails loudly when missing (these tests never skip).
pub fn model_path() -> PathBuf {
    let dir = std::env::var_os("TUNELAB_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/fetch-models (this test never skips)", path.display());
    path
}
