//! End to end on the real SmolLM2: `tunelab eval run` with the local backend (base and
//! with an adapter), the run directory it writes, `eval summary`, resuming an interrupted
//! run from the generation cache, perplexity, and scoring a LLaMA-Factory predictions file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{model_path, root, run_ok, scratch, tunelab};
use serde_json::Value;
use tunelab::{LoraConfig, Model};
use tunelab_evalsuite::run::store::read_results;

fn meta(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

#[test]
fn base_and_adapter_runs_write_run_directories_and_summaries() {
    let dir = scratch("e2e-runs");
    let model = model_path();
    let suite = root().join("examples/security-audit/suite.toml");
    let (m, s, o) = (model.to_str().unwrap(), suite.to_str().unwrap(), dir.to_str().unwrap());
    let common = ["--suite", s, "--model", m, "--limit", "2", "--max-tokens", "40", "--out", o];
    let base_out = run_ok(&[&["eval", "run", "--name", "base"], &common[..]].concat());
    assert!(base_out.contains("guard") && base_out.contains("95% CI"), "{base_out}");
    let base = dir.join("base");
    for f in ["run.json", "results.parquet", "results.csv"] {
        assert!(base.join(f).exists(), "{f} missing");
    }
    let m1 = meta(&base);
    assert_eq!(m1["counts"]["cases"], 8);
    assert_eq!(m1["counts"]["cached"], 0);
    assert_eq!(m1["backend"]["kind"], "local");
    assert_eq!(m1["backend"]["model_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(m1["decoding"]["temperature"], 0.0);
    assert!(m1["suite"]["sha256"].as_str().is_some() && m1["rubrics"].as_array().unwrap().len() == 2);
    let df = read_results(&base).unwrap();
    // 6 demo cases × 5 security checks + 2 guard cases × 4 guard checks.
    assert_eq!(df.height(), 6 * 5 + 2 * 4);
    for col in ["category", "case_id", "prompt", "reference", "output", "scorer", "value", "passed", "latency_s", "completion_tokens"] {
        assert!(df.column(col).is_ok(), "column {col} missing");
    }
    let csv = std::fs::read_to_string(base.join("results.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap().split(',').count(), df.width());
    // The suite's prompts share the chat template's system turn: prefilled once, it is
    // counted as cached in every later case's prompt, never more than the prompt itself.
    let tokens = |col: &str| -> Vec<u64> { df.column(col).unwrap().u64().unwrap().iter().map(Option::unwrap).collect() };
    let (prompt, cached) = (tokens("prompt_tokens"), tokens("cached_prompt_tokens"));
    assert!(prompt.iter().zip(&cached).all(|(p, c)| c < p), "cached {cached:?} of prompts {prompt:?}");
    assert!(cached.iter().filter(|&&c| c > 0).count() >= 30, "cached prompt tokens {cached:?}");

    // The same run again: every output comes from the cache.
    run_ok(&[&["eval", "run", "--name", "base-again"], &common[..]].concat());
    assert_eq!(meta(&dir.join("base-again"))["counts"]["cached"], 8);
    // bf16 weights round, so they neither reuse the exact weights' cached outputs nor pass
    // for them: the record names them.
    run_ok(&[&["eval", "run", "--name", "base-bf16", "--weights", "bf16"], &common[..]].concat());
    let rounded = meta(&dir.join("base-bf16"));
    assert_eq!(rounded["counts"]["cached"], 0);
    assert_eq!(rounded["backend"]["weights"], "bf16");
    assert!(m1["backend"].get("weights").is_none(), "the exact weights' record has no weights field: {m1}");
    let shown = run_ok(&["eval", "summary", dir.join("base-bf16").to_str().unwrap()]);
    assert!(shown.contains("(bf16 weights)"), "{shown}");
    // An existing name is refused, and nothing is lost.
    let again = tunelab(&[&["eval", "run", "--name", "base"], &common[..]].concat());
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // An adapter (random B so it changes outputs) on the same base: a different cache key.
    let adapter = dir.join("adapter");
    let base_model = Model::load(&model).unwrap();
    let set = common::random_adapter(&base_model.transformer, LoraConfig::default(), 3, 0.02);
    set.save(&adapter).unwrap();
    // One command, one loaded base: the base alone (all from the cache) and the adapter.
    run_ok(&[&["eval", "run", "--name", "both", "--with-base", "--adapter", adapter.to_str().unwrap()], &common[..]].concat());
    assert_eq!(meta(&dir.join("both-base"))["counts"]["cached"], 8);
    let m2 = meta(&dir.join("both-adapter"));
    assert_eq!(m2["counts"]["cached"], 0);
    assert_eq!(m2["backend"]["adapter_sha256"].as_str().unwrap().len(), 64);

    let summary = tunelab(&["eval", "summary", base.to_str().unwrap(), dir.join("both-adapter").to_str().unwrap(), "--json"]);
    assert!(summary.status.success(), "{}", String::from_utf8_lossy(&summary.stderr));
    let json: Value = serde_json::from_slice(&summary.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let cats: Vec<&str> = json[0]["categories"].as_array().unwrap().iter().map(|c| c["category"].as_str().unwrap()).collect();
    assert_eq!(cats, ["seen", "heldout", "ood", "guard"]);
    for c in json[0]["categories"].as_array().unwrap() {
        let (lo, mean, hi) = (c["score"]["low"].as_f64().unwrap(), c["score"]["mean"].as_f64().unwrap(), c["score"]["high"].as_f64().unwrap());
        assert!(lo <= mean && mean <= hi && (0.0..=1.0).contains(&mean), "{c}");
    }
}

#[test]
fn an_interrupted_run_resumes_without_regenerating() {
    let dir = scratch("e2e-resume");
    let model = model_path();
    let suite = root().join("rubrics/guard/suite.toml");
    let args = |name: &str| -> Vec<String> {
        [
            "eval",
            "run",
            "--suite",
            suite.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--limit",
            "6",
            "--batch",
            "1",
            "--max-tokens",
            "32",
            "--out",
            dir.to_str().unwrap(),
            "--name",
            name,
        ]
        .map(String::from)
        .to_vec()
    };
    let cache = dir.join(".cache/generations.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunelab")).args(args("first")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let lines = |p: &PathBuf| std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0);
    while lines(&cache) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no generations cached");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = lines(&cache);
    assert!(done < 6, "the run finished before the kill");
    assert!(!dir.join("first").exists(), "an interrupted run left a run directory");
    run_ok(&args("first").iter().map(String::as_str).collect::<Vec<_>>());
    let m = meta(&dir.join("first"));
    assert_eq!(m["counts"]["cached"].as_u64().unwrap() as usize, done);
    assert_eq!(lines(&cache), 6, "finished cases were generated again");
}

#[test]
fn perplexity_of_the_reference_under_the_model() {
    let dir = scratch("e2e-ppl");
    std::fs::write(dir.join("rubric.toml"), "name = \"ppl\"\n[[checks]]\nname = \"ppl\"\nscorer = \"perplexity\"\nthreshold = 1000\n").unwrap();
    std::fs::write(
        dir.join("cases.jsonl"),
        "{\"id\": \"fluent\", \"instruction\": \"What is the capital of France?\", \"output\": \"The capital of France is Paris.\"}\n\
         {\"id\": \"garbled\", \"instruction\": \"What is the capital of France?\", \"output\": \"Paris capital the France of is banana.\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("suite.toml"), "name = \"ppl\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n").unwrap();
    run_ok(&[
        "eval",
        "run",
        "--suite",
        dir.join("suite.toml").to_str().unwrap(),
        "--model",
        model_path().to_str().unwrap(),
        "--max-tokens",
        "8",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "r",
    ]);
    let df = read_results(&dir.join("r")).unwrap();
    let v: Vec<f64> = df.column("value").unwrap().f64().unwrap().iter().map(Option::unwrap).collect();
    assert!(v.iter().all(|x| x.is_finite() && *x > 1.0), "{v:?}");
    assert!(v[0] < v[1], "fluent reference should be likelier than a garbled one: {v:?}");
}

#[test]
fn llama_factory_predictions_are_matched_and_scored() {
    let dir = scratch("e2e-predictions");
    let suite = root().join("rubrics/guard/suite.toml");
    let cases: Vec<Value> =
        std::fs::read_to_string(root().join("rubrics/guard/cases.jsonl")).unwrap().lines().take(3).map(|l| serde_json::from_str(l).unwrap()).collect();
    // LLaMA-Factory writes the chat-templated prompt, the prediction and the label.
    let lines: Vec<String> = cases
        .iter()
        .map(|c| {
            let user = match c["input"].as_str().unwrap_or("") {
                "" => c["instruction"].as_str().unwrap().to_string(),
                input => format!("{}\n{}", c["instruction"].as_str().unwrap(), input),
            };
            serde_json::json!({"prompt": format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"), "predict": c["output"], "label": c["output"]})
                .to_string()
        })
        .collect();
    let preds = dir.join("generated_predictions.jsonl");
    std::fs::write(&preds, lines.join("\n") + "\n").unwrap();
    run_ok(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--predictions",
        preds.to_str().unwrap(),
        "--limit",
        "3",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "p",
    ]);
    let df = read_results(&dir.join("p")).unwrap();
    let keyword_values: Vec<f64> = df
        .column("scorer")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .zip(df.column("value").unwrap().f64().unwrap().iter())
        .filter(|(s, _)| *s == Some("keywords"))
        .map(|(_, v)| v.unwrap())
        .collect();
    assert_eq!(keyword_values, [1.0, 1.0, 1.0], "references scored as predictions must find every keyword");
    // A case without a prediction, and a malformed line, are errors that say where.
    let missing = tunelab(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--predictions",
        preds.to_str().unwrap(),
        "--limit",
        "4",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "q",
    ]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && err.contains("no prediction for 1 case(s)") && err.contains("guard-en-004"), "{err}");
    std::fs::write(&preds, format!("{}\n{{\"prompt\": \"x\", \"predict\": \n", lines[0])).unwrap();
    let bad =
        tunelab(&["eval", "run", "--suite", suite.to_str().unwrap(), "--predictions", preds.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--name", "r"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("generated_predictions.jsonl:2"), "{err}");
}

/// Two adapters whose directories share a name would write one run directory: refused
/// before anything is generated.
#[test]
fn adapters_that_would_share_a_run_name_are_refused() {
    let dir = scratch("e2e-same-names");
    let suite = root().join("rubrics/guard/suite.toml");
    let (a, b) = (dir.join("a/adapter"), dir.join("b/adapter"));
    let out = tunelab(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--model",
        model_path().to_str().unwrap(),
        "--adapter",
        a.to_str().unwrap(),
        "--adapter",
        b.to_str().unwrap(),
        "--name",
        "r",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("would both be written as run \"r-adapter\""), "{err}");
    assert!(!dir.join("r-adapter").exists());
}
