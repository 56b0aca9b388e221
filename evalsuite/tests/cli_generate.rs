//! End to end: the `tunelab generate` binary on the real SmolLM2 model.

mod common;

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
