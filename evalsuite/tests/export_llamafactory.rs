//! `tunelab export llamafactory`: the data in LLaMA-Factory's alpaca or sharegpt form (read
//! back by tunelab, it is the same conversations), dataset_info.json entries, and YAML whose
//! keys are all LLaMA-Factory arguments, with tunelab's hyper-parameters.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{root, scratch, tunelab};
use serde_json::Value;
use tunelab::data::Dataset;
use tunelab_evalsuite::interop::llamafactory::ACCEPTED_KEYS;

fn yaml_keys(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("not key: value: {l}"));
            assert!(ACCEPTED_KEYS.contains(&k), "{k} is not a LLaMA-Factory argument");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn conversations(path: &Path) -> Vec<Vec<(String, String)>> {
    Dataset::load(path).unwrap().examples.iter().map(|e| e.messages.iter().map(|m| (format!("{:?}", m.role), m.content.clone())).collect()).collect()
}

#[test]
fn the_demo_data_exports_as_an_alpaca_project_tunelab_reads_back_unchanged() {
    let dir = scratch("export-lf");
    let (train, heldout) = (root().join("examples/security-audit/train.jsonl"), root().join("examples/security-audit/heldout.jsonl"));
    let out = dir.join("lf");
    let run = tunelab(&[
        "export",
        "llamafactory",
        "--data",
        train.to_str().unwrap(),
        "--eval-data",
        heldout.to_str().unwrap(),
        "--model",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let info: Value = serde_json::from_slice(&std::fs::read(out.join("data/dataset_info.json")).unwrap()).unwrap();
    assert_eq!(info["tunelab"]["file_name"], "tunelab.json");
    assert_eq!(info["tunelab"]["formatting"], "alpaca");
    assert_eq!(info["tunelab_eval"]["columns"]["response"], "output");
    assert_eq!(conversations(&out.join("data/tunelab.json")), conversations(&train), "the exported training data is the same conversations");
    assert_eq!(conversations(&out.join("data/tunelab_eval.json")), conversations(&heldout));

    let t = yaml_keys(&out.join("train_lora_sft.yaml"));
    for (k, v) in [
        ("stage", "\"sft\""),
        ("finetuning_type", "\"lora\""),
        ("lora_rank", "8"),
        ("lora_alpha", "16"),
        ("lora_target", "\"all\""),
        ("template", "\"smollm2\""),
        ("learning_rate", "5.0e-5"),
        ("num_train_epochs", "3.0"),
        ("lr_scheduler_type", "\"cosine\""),
        ("warmup_ratio", "0.1"),
        ("cutoff_len", "1024"),
        ("eval_dataset", "\"tunelab_eval\""),
        ("plot_loss", "true"),
        ("dataset_dir", "\"data\""),
    ] {
        assert_eq!(t.get(k).map(String::as_str), Some(v), "train_lora_sft.yaml {k}");
    }
    // PyYAML, which LLaMA-Factory reads its YAML with, sees numbers as numbers.
    let python = std::env::var("TUNELAB_TEST_PYTHON").expect("set TUNELAB_TEST_PYTHON (scripts/test does): the PyYAML check never skips");
    let check = "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(type(d['learning_rate']).__name__, type(d['lora_alpha']).__name__, type(d['warmup_ratio']).__name__, d['template'])";
    let parsed = std::process::Command::new(python).args(["-c", check, out.join("train_lora_sft.yaml").to_str().unwrap()]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "float int float smollm2", "{}", String::from_utf8_lossy(&parsed.stderr));
    let p = yaml_keys(&out.join("predict.yaml"));
    for (k, v) in [("do_predict", "true"), ("predict_with_generate", "true"), ("do_sample", "false"), ("adapter_name_or_path", "\"saves/tunelab-lora\"")] {
        assert_eq!(p.get(k).map(String::as_str), Some(v), "predict.yaml {k}");
    }
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    for needle in ["FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=1 MASTER_ADDR=", "ds_z3_config.json", "generated_predictions.jsonl", "--predictions"] {
        assert!(readme.contains(needle), "README lacks {needle}");
    }
}

/// `tunelab export llamafactory` of `data` for `model` into `out`, with `extra` arguments.
fn export(data: &Path, model: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    tunelab(&[&["export", "llamafactory", "--data", data.to_str().unwrap(), "--model", model, "--out", out.to_str().unwrap()][..], extra].concat())
}

#[test]
fn multi_turn_data_exports_as_sharegpt_and_unknown_models_need_a_template() {
    let dir = scratch("export-lf-sharegpt");
    let data = dir.join("chat.jsonl");
    let line = |turns: &[(&str, &str)]| {
        serde_json::json!({"messages": turns.iter().map(|(r, c)| serde_json::json!({"role": r, "content": c})).collect::<Vec<_>>()}).to_string()
    };
    std::fs::write(
        &data,
        [
            line(&[("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "2+2?"), ("assistant", "4")]),
            line(&[("user", "Name a colour."), ("assistant", "Blue.")]),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = dir.join("lf");
    let run = export(&data, "Qwen/Qwen2.5-7B-Instruct", &out, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let info: Value = serde_json::from_slice(&std::fs::read(out.join("data/dataset_info.json")).unwrap()).unwrap();
    assert_eq!(info["tunelab"]["formatting"], "sharegpt");
    assert_eq!(info["tunelab"]["tags"]["assistant_tag"], "gpt");
    assert_eq!(conversations(&out.join("data/tunelab.json")), conversations(&data));
    let t = yaml_keys(&out.join("train_lora_sft.yaml"));
    assert_eq!((t["template"].as_str(), t["val_size"].as_str()), ("\"qwen\"", "0.1"), "no eval data: LLaMA-Factory holds out 10 %");

    // A trained run's settings travel: train_config.json as `tunelab train` writes it.
    let mut settings = tunelab::train::TrainConfig { learning_rate: 3e-4, epochs: 2, max_steps: 7, train_on_prompt: true, ..Default::default() };
    settings.lora.r = 16;
    settings.lora.use_rslora = true;
    settings.lora.target_modules = vec!["q_proj".into(), "v_proj".into()];
    let mut saved = serde_json::to_value(&settings).unwrap();
    saved["base_model"] = Value::from("models/x.gguf");
    std::fs::write(dir.join("train_config.json"), saved.to_string()).unwrap();
    let with = dir.join("lf2");
    let config = dir.join("train_config.json");
    // An existing project's other datasets stay listed.
    std::fs::create_dir_all(with.join("data")).unwrap();
    std::fs::write(with.join("data/dataset_info.json"), r#"{"mine": {"file_name": "mine.json"}}"#).unwrap();
    let run = export(&data, "Qwen/Qwen2.5-7B-Instruct", &with, &["--train-config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let t = yaml_keys(&with.join("train_lora_sft.yaml"));
    assert_eq!((t["learning_rate"].as_str(), t["num_train_epochs"].as_str(), t["lora_rank"].as_str()), ("3.0e-4", "2.0", "16"));
    let picked = ["lora_target", "use_rslora", "max_steps", "train_on_prompt"].map(|k| t[k].as_str());
    assert_eq!(picked, ["\"q_proj,v_proj\"", "true", "7", "true"]);
    let info: Value = serde_json::from_slice(&std::fs::read(with.join("data/dataset_info.json")).unwrap()).unwrap();
    assert_eq!((info["mine"]["file_name"].as_str(), info["tunelab"]["formatting"].as_str()), (Some("mine.json"), Some("sharegpt")));

    // Settings LLaMA-Factory could not train with are refused before anything is written.
    saved["learning_rate"] = Value::from(-1.0);
    std::fs::write(&config, saved.to_string()).unwrap();
    let bad_out = dir.join("lf3");
    let run = export(&data, "Qwen/Qwen2.5-7B-Instruct", &bad_out, &["--train-config", config.to_str().unwrap()]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("learning rate"), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!bad_out.exists());

    let unknown = export(&data, "acme/mystery-7b", &dir.join("x"), &[]);
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("--template"));
    // A template name LLaMA-Factory does not register is written, with a warning.
    let typo = export(&data, "acme/mystery-7b", &dir.join("y"), &["--template", "qwen25"]);
    assert!(typo.status.success() && String::from_utf8_lossy(&typo.stderr).contains("warning: template \"qwen25\""), "{typo:?}");
}

/// LLaMA-Factory itself (0.9.5 from PyPI, with the transformers, PEFT and TRL versions it
/// pins, in the Python scripts/test sets up) parses both exported YAML files with its own
/// argument parser — which refuses unknown keys and checks their combinations — and finds
/// every dataset they name in the exported dataset_info.json: alpaca data with a held-out
/// file, and multi-turn data as sharegpt.
#[test]
fn llama_factory_parses_what_is_exported() {
    let python = std::env::var("TUNELAB_LLAMAFACTORY_PYTHON")
        .expect("set TUNELAB_LLAMAFACTORY_PYTHON to a Python with llamafactory installed (scripts/test does): this test never skips");
    let dir = scratch("export-lf-parse");
    let chat = dir.join("chat.jsonl");
    let turn = |r: &str, c: &str| serde_json::json!({"role": r, "content": c});
    std::fs::write(
        &chat,
        serde_json::json!({"messages": [turn("user", "Hi"), turn("assistant", "Hello."), turn("user", "2+2?"), turn("assistant", "4")]}).to_string(),
    )
    .unwrap();
    let (train, heldout) = (root().join("examples/security-audit/train.jsonl"), root().join("examples/security-audit/heldout.jsonl"));
    let exports = [
        (
            "alpaca",
            vec!["--data", train.to_str().unwrap(), "--eval-data", heldout.to_str().unwrap(), "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"],
            "smollm2",
        ),
        ("sharegpt", vec!["--data", chat.to_str().unwrap(), "--model", "Qwen/Qwen2.5-7B-Instruct", "--template", "qwen"], "qwen"),
    ];
    for (format, args, template) in exports {
        let out = dir.join(format);
        let run = tunelab(&[&["export", "llamafactory", "--out", out.to_str().unwrap()], &args[..]].concat());
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let parsed = std::process::Command::new(&python).arg(root().join("tests/python/llamafactory_parse.py")).arg(&out).output().unwrap();
        let stderr = String::from_utf8_lossy(&parsed.stderr);
        assert!(parsed.status.success(), "LLaMA-Factory refused the {format} export:\n{stderr}");
        // LLaMA-Factory logs to stdout too; the script's answer is the last line.
        let stdout = String::from_utf8_lossy(&parsed.stdout);
        let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let (t, p) = (&seen["train_lora_sft.yaml"], &seen["predict.yaml"]);
        assert_eq!(
            (t["do_train"].as_bool(), t["finetuning_type"].as_str(), t["lora_rank"].as_u64(), t["template"].as_str()),
            (Some(true), Some("lora"), Some(8), Some(template)),
            "{seen}"
        );
        assert_eq!(
            (p["do_predict"].as_bool(), p["predict_with_generate"].as_bool(), p["do_sample"].as_bool()),
            (Some(true), Some(true), Some(false)),
            "{seen}"
        );
        let formats: Vec<&str> = t["datasets"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().rsplit(':').next().unwrap()).collect();
        assert!(!formats.is_empty() && formats.iter().all(|f| *f == format), "{format}: {seen}");
    }
}
