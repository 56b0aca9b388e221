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

/// `data replay` answers prompt-only records (Alpaca without `output`, OpenAI messages
/// ending with the user) with the model's own greedy answers, equal to `tunelab generate`'s,
/// writes them as records the trainer reads, and leaves out answers cut at --max-tokens.
#[test]
fn data_replay_writes_the_model_s_own_answers_as_training_records() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("tunelab-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"p1\", \"instruction\": \"What is the capital of France? Answer in one word.\"}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"Name a primary color. One word.\"}]}\n\
         {\"instruction\": \"Write a long essay about the history of Rome.\", \"input\": \"\"}\n",
    )
    .unwrap();
    let out = dir.join("replay.jsonl");
    let run = tunelab(&["data", "replay", prompts.to_str().unwrap(), "--model", m, "--out", out.to_str().unwrap(), "--max-tokens", "24"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("2 replay record(s)") && stdout.contains("1 left out"), "{stdout}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "p1");
    assert_eq!(lines[1]["id"], "replay-0002");
    let answer = lines[0]["messages"][1]["content"].as_str().unwrap();
    let direct = tunelab(&["generate", "--model", m, "--prompt", "What is the capital of France? Answer in one word.", "--max-tokens", "24"]);
    assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), answer, "replay answer differs from `tunelab generate`'s");
    // The records are training data as they stand.
    let check = tunelab(&["data", "check", out.to_str().unwrap(), "--no-tokens"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    std::fs::remove_dir_all(&dir).ok();
}

/// An adapter whose `base_model_name_or_path` names the loaded model (as a hub id, the way
/// PEFT and LLaMA-Factory write it) applies; one that names another model is refused, the
/// message naming both, even though its shapes fit.
#[test]
fn an_adapter_for_another_base_model_is_refused_naming_both() {
    let model = model_path();
    let loaded = tunelab::Model::load(&model).unwrap();
    let dir = common::scratch("adapter-base-name");
    let set = tunelab::AdapterSet::new(&loaded.transformer, tunelab::LoraConfig::default(), 1).unwrap();
    let generate = |declared: &str| {
        let adapter = dir.join(declared.replace('/', "_"));
        set.save(&adapter).unwrap();
        let cfg_path = adapter.join("adapter_config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg["base_model_name_or_path"] = declared.into();
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        tunelab(&["generate", "--model", model.to_str().unwrap(), "--adapter", adapter.to_str().unwrap(), "--prompt", "Hi", "--max-tokens", "2"])
    };
    let same = generate("HuggingFaceTB/SmolLM2-135M-Instruct");
    assert!(same.status.success(), "{}", String::from_utf8_lossy(&same.stderr));
    let other = generate("HuggingFaceTB/SmolLM2-135M");
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "an adapter for another base model was applied");
    assert!(
        stderr.contains("\"HuggingFaceTB/SmolLM2-135M\"") && stderr.contains("SmolLM2-135M-Instruct") && stderr.contains("base_model_name_or_path"),
        "{stderr}"
    );
}

#[test]
fn a_device_this_build_cannot_use_is_refused_by_name() {
    let model = model_path();
    let m = model.to_str().unwrap();
    for (device, want) in [("gpu0", "expected cpu, cuda or cuda:N"), ("cuda:1", if cfg!(feature = "cuda") { "cannot open GPU 1" } else { "--features cuda" })] {
        let out = tunelab(&["generate", "--model", m, "--prompt", "hi", "--device", device]);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "--device {device} was accepted");
        assert!(stderr.contains(want) && stderr.contains(device), "--device {device}: {stderr}");
    }
    // The CPU by name is the default path.
    let out = tunelab(&["generate", "--model", m, "--prompt", "What is 2+2?", "--max-tokens", "4", "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn merge_without_an_adapter_writes_the_base_model_as_an_hf_directory_that_answers_the_same() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let hf = common::scratch("merge-without-adapter").join("hf");
    let out = tunelab(&["merge", "--model", m, "--out", hf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(hf.join(file).is_file(), "no {file} in {}", hf.display());
    }
    // The directory holds the file's weights dequantized to f32, which the GGUF path decodes
    // exactly: greedy answers are the same.
    let ask = |model: &str| tunelab(&["generate", "--model", model, "--prompt", "Name three primary colours.", "--max-tokens", "24"]);
    let (from_gguf, from_dir) = (ask(m), ask(hf.to_str().unwrap()));
    assert!(from_dir.status.success(), "{}", String::from_utf8_lossy(&from_dir.stderr));
    assert!(!from_gguf.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&from_dir.stdout), String::from_utf8_lossy(&from_gguf.stdout));
}

#[test]
fn merge_with_an_adapter_writes_a_model_that_answers_as_the_adapter_does() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let dir = common::scratch("merge-with-adapter");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/security-audit/train.jsonl");
    let adapter = dir.join("adapter");
    // A few steps at a high learning rate, so that the adapter changes the answers.
    let args = [
        "train",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
        "--max-steps",
        "3",
        "--batch-size",
        "1",
        "--cutoff",
        "128",
        "--lr",
        "0.01",
    ];
    let out = tunelab(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The base written without an adapter keeps the GGUF file's name (`_name_or_path`), so
    // the adapter trained on that file passes its base_model_name_or_path check there.
    let (base, merged) = (dir.join("base"), dir.join("merged"));
    for (args, what) in [
        (vec!["merge", "--model", m, "--out", base.to_str().unwrap()], "base"),
        (vec!["merge", "--model", m, "--adapter", adapter.to_str().unwrap(), "--out", merged.to_str().unwrap()], "merged"),
    ] {
        let out = tunelab(&args);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The f32 base directory with the adapter attached folds `W + scale·B·A` exactly as the
    // merge does, so greedy answers are equal; the base alone answers otherwise.
    let ask = |model: &Path, adapter: Option<&Path>| {
        let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt", "Audit this line: eval(input())", "--max-tokens", "24"];
        if let Some(a) = adapter {
            args.extend(["--adapter", a.to_str().unwrap()]);
        }
        let out = tunelab(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let adapted = ask(&base, Some(&adapter));
    assert_eq!(ask(&merged, None), adapted);
    assert_ne!(ask(&base, None), adapted, "the adapter did not change the answer, so the merge is not tested");
}
