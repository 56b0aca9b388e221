//! End to end: the `tunelab generate` binary on the real SmolLM2 model.

mod common;

use std::path::Path;
use std::process::Command;

use common::model_path;

fn tunelab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tunelab")).args(args).output().expect("run tunelab")
}

#[test]
fn generate_answers_the_photosynthesis_question() {
    let model = model_path();
    let out = tunelab(&["generate", "--model", model.to_str().unwrap(), "--prompt", "Explain photosynthesis in two sentences.", "--max-tokens", "48"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "tunelab failed: {stderr}");
    let lower = stdout.to_lowercase();
    assert!(lower.contains("photosynthesis"), "unexpected answer: {stdout}");
    assert!(["light", "sun", "energy", "carbon dioxide"].iter().any(|w| lower.contains(w)), "unexpected answer: {stdout}");
    assert!(stderr.contains("tok/s"), "no speed report on stderr: {stderr}");
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_honours_stop_strings() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Write a short poem about the sea.",
        "--max-tokens",
        "24",
        "--temperature",
        "0.9",
        "--top-p",
        "0.9",
        "--top-k",
        "40",
        "--seed",
        "7",
    ];
    let a = tunelab(&args);
    let b = tunelab(&args);
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout, "same seed, different text");
    let greedy = tunelab(&["generate", "--model", m, "--prompt", "Count from 1 to 20, separated by commas.", "--max-tokens", "64"]);
    let full = String::from_utf8(greedy.stdout).unwrap();
    assert!(full.contains('5'), "unexpected answer: {full}");
    let stopped = tunelab(&["generate", "--model", m, "--prompt", "Count from 1 to 20, separated by commas.", "--max-tokens", "64", "--stop", "5"]);
    let cut = String::from_utf8(stopped.stdout).unwrap();
    assert!(!cut.contains('5'), "stop string leaked: {cut}");
    assert!(full.starts_with(cut.trim_end()), "stopped text {cut:?} is not a prefix of {full:?}");
}

#[test]
fn bad_arguments_and_missing_models_fail_with_a_message() {
    let out = tunelab(&["generate", "--model", "does-not-exist.gguf", "--prompt", "hi"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("scripts/fetch-models"), "{stderr}");
    let model = model_path();
    let out = tunelab(&["generate", "--model", model.to_str().unwrap(), "--prompt", "hi", "--temperature", "-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("temperature"));
}

/// `data split` with one path for both parts (or over its input) is refused before anything
/// is written.
#[test]
fn data_split_refuses_one_path_for_two_files() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("split-same-path");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("all.jsonl");
    let records: String = (0..10).map(|i| format!("{{\"instruction\": \"question {i}\", \"output\": \"answer {i}\"}}\n")).collect();
    std::fs::write(&data, &records).unwrap();
    let split = |train: &Path, held: &Path| {
        tunelab(&["data", "split", data.to_str().unwrap(), "--heldout", "3", "--train-out", train.to_str().unwrap(), "--heldout-out", held.to_str().unwrap()])
    };
    let same = dir.join("out.jsonl");
    let out = split(&same, &dir.join(".").join("out.jsonl"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--train-out and --heldout-out name the same file"), "{err}");
    assert!(!same.exists());
    let out = split(&data, &dir.join("held.jsonl"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("the dataset and --train-out"));
    assert_eq!(std::fs::read_to_string(&data).unwrap(), records, "the input is untouched");
    // Distinct paths split 7 + 3.
    let (train, held) = (dir.join("train.jsonl"), dir.join("held.jsonl"));
    assert!(split(&train, &held).status.success());
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!((lines(&train), lines(&held)), (7, 3));
}
