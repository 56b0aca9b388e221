//! Sharded evaluation: `eval run --shard I/N` slices, joined by `eval merge` into a run equal
//! to the unsharded one; mismatched, missing or repeated shards are refused.

mod common;

use std::path::Path;

use common::{predictions_run_args, review_runs, scratch, tunelab};
use serde_json::Value;

fn run_ok(args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tunelab(&refs);
    assert!(out.status.success(), "tunelab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn shard(dir: &Path, predictions: &str, name: &str, slice: &str) {
    let mut args = predictions_run_args(&dir.join("suite.toml"), &dir.join(predictions), dir, name);
    args.extend(["--shard".to_string(), slice.to_string()]);
    run_ok(&args);
}

fn summary(run: &Path) -> Value {
    let out = tunelab(&["eval", "summary", run.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Provenance differs by design (name, command, timing); the results must not.
    let s = &mut v[0];
    s.as_object_mut().unwrap().retain(|k, _| k == "categories" || k == "cases");
    v
}

fn merge(dir: &Path, shards: &[&str], name: &str) -> std::process::Output {
    let mut args: Vec<String> = vec!["eval".into(), "merge".into()];
    args.extend(shards.iter().map(|s| dir.join(s).display().to_string()));
    args.extend(["--name".into(), name.into(), "--out".into(), dir.display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tunelab(&refs)
}

#[test]
fn merged_shards_equal_the_unsharded_run() {
    let dir = scratch("eval-shards");
    let answer = |i: usize| if i.is_multiple_of(3) { String::new() } else { format!("answer {i}") };
    review_runs(&dir, 30, &[("full", &answer)]);
    for i in 1..=3 {
        shard(&dir, "full.jsonl", &format!("s{i}"), &format!("{i}/3"));
    }
    let sizes: Vec<u64> = (1..=3)
        .map(|i| {
            let record: Value = serde_json::from_slice(&std::fs::read(dir.join(format!("s{i}/run.json"))).unwrap()).unwrap();
            assert_eq!(record["selection"]["shard"], serde_json::json!({"index": i, "count": 3}));
            record["counts"]["cases"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), 30, "the slices cover every case once: {sizes:?}");
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");

    let out = merge(&dir, &["s2", "s1", "s3"], "merged");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary(&dir.join("merged")), summary(&dir.join("full")));
    let record: Value = serde_json::from_slice(&std::fs::read(dir.join("merged/run.json")).unwrap()).unwrap();
    assert_eq!((record["name"].as_str(), record["counts"]["cases"].as_u64()), (Some("merged"), Some(30)));
    assert!(record["selection"].get("shard").is_none(), "the merged run is whole");
    // The merged run compares with the full one as the same outputs.
    let gate = tunelab(&[
        "eval",
        "report",
        dir.join("full").to_str().unwrap(),
        dir.join("merged").to_str().unwrap(),
        "--format",
        "json",
        "--out",
        dir.join("r.json").to_str().unwrap(),
    ]);
    assert!(gate.status.success(), "{}", String::from_utf8_lossy(&gate.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(dir.join("r.json")).unwrap()).unwrap();
    let flags = report["comparisons"][0]["flags"].to_string();
    assert!(flags.contains("no effect") || flags.contains("identical"), "a merged run equal to the full run: {flags}");
}

#[test]
fn missing_repeated_or_mismatched_shards_are_refused() {
    let dir = scratch("eval-shards-refused");
    let a = |i: usize| format!("answer {i}");
    let b = |i: usize| format!("other answer {i}");
    review_runs(&dir, 12, &[("a", &a), ("b", &b)]);
    for i in 1..=2 {
        shard(&dir, "a.jsonl", &format!("a{i}"), &format!("{i}/2"));
        shard(&dir, "b.jsonl", &format!("b{i}"), &format!("{i}/2"));
    }
    shard(&dir, "a.jsonl", "a1of3", "1/3");
    // A shard as an older tunelab wrote it: its results table lacks a column.
    let old = dir.join("a2-older");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["run.json", "results.csv"] {
        std::fs::copy(dir.join("a2").join(f), old.join(f)).unwrap();
    }
    let mut table = tunelab_evalsuite::run::store::read_results(&dir.join("a2")).unwrap().drop("cached_prompt_tokens").unwrap();
    polars::prelude::ParquetWriter::new(std::fs::File::create(old.join("results.parquet")).unwrap()).finish(&mut table).unwrap();
    // A shard whose table lost a row after its record was written.
    let cut = dir.join("a2-cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(dir.join("a2/run.json"), cut.join("run.json")).unwrap();
    let full = tunelab_evalsuite::run::store::read_results(&dir.join("a2")).unwrap();
    let mut table = full.slice(1, full.height() - 1);
    polars::prelude::ParquetWriter::new(std::fs::File::create(cut.join("results.parquet")).unwrap()).finish(&mut table).unwrap();
    for (shards, why) in [
        (&["a1", "a2-cut"][..], "where the run record counts"),
        (&["a1", "a2-older"][..], "only in the first: [cached_prompt_tokens]"),
        (&["a1"][..], "shard(s) 2/2 missing"),
        (&["a1", "a1", "a2"][..], "given twice"),
        (&["a1", "b2"][..], "backend"),
        (&["a1", "a1of3"][..], "one of 2"),
        (&["a1", "a"][..], "not a shard"),
    ] {
        let out = merge(&dir, shards, "m");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{shards:?}: expected {why:?} in {err}");
        assert!(!dir.join("m").exists(), "{shards:?} left a run behind");
    }
    let out = tunelab(&[
        "eval",
        "run",
        "--suite",
        dir.join("suite.toml").to_str().unwrap(),
        "--predictions",
        dir.join("a.jsonl").to_str().unwrap(),
        "--shard",
        "3/2",
    ]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("1 ≤ I ≤ N"));
}
