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

/// The fetched all-MiniLM-L6-v2 directory; fails loudly when missing.
pub fn minilm_path() -> PathBuf {
    let dir = std::env::var_os("TUNELAB_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let path = dir.join("all-MiniLM-L6-v2");
    assert!(path.join("model.safetensors").exists(), "{} is missing: run scripts/fetch-models (this test never skips)", path.display());
    path
}

/// A fresh scratch directory under the target directory's tmp.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `tunelab` binary.
pub fn tunelab(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).args(args).output().expect("run tunelab")
}

/// The `eval run` arguments that score `predictions` on `suite` into `out/name`.
pub fn predictions_run_args(suite: &std::path::Path, predictions: &std::path::Path, out: &std::path::Path, name: &str) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    ["eval", "run", "--suite", &path(suite), "--predictions", &path(predictions), "--out", &path(out), "--name", name].iter().map(|s| s.to_string()).collect()
}

/// Scores `predictions` on `suite` into `out/name` with the `tunelab` binary; panics with its
/// stderr when it fails.
pub fn score_predictions(suite: &std::path::Path, predictions: &std::path::Path, out: &std::path::Path, name: &str) {
    let args = predictions_run_args(suite, predictions, out, name);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&args).output().expect("run tunelab");
    assert!(run.status.success(), "tunelab {args:?} failed:\n{}", String::from_utf8_lossy(&run.stderr));
}
