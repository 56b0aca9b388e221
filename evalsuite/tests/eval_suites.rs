//! Suites, rubrics and model-free scoring on the shipped files: the demo suite's categories,
//! training-overlap detection (seen / leak), `eval suite new`, the security-report rubric on
//! reference reports, and embedding similarity against sentence-transformers' values.

mod common;

use std::path::Path;

use common::{minilm_path, root, scratch};
use serde_json::Value;
use tunelab_evalsuite::backend::Generated;
use tunelab_evalsuite::rubric::{CaseScore, Rubric};
use tunelab_evalsuite::run::score::score_all;
use tunelab_evalsuite::scorers::embedding::{cosine, Embedder};
use tunelab_evalsuite::scorers::ScoreContext;
use tunelab_evalsuite::suite::{ScoredCase, Suite};
use tunelab_evalsuite::Error;

/// Scores `outputs` for `cases` through `eval run`'s scoring path, without a model.
fn score(cases: &[ScoredCase], outputs: &[String]) -> Vec<CaseScore> {
    let generated: Vec<Generated> = outputs
        .iter()
        .map(|t| Generated { text: t.clone(), prompt_tokens: None, completion_tokens: None, cached_prompt_tokens: None, latency_s: 0.0, finish: "stop".into() })
        .collect();
    score_all(cases, &generated, &ScoreContext::new("test", None)).unwrap()
}

#[test]
fn demo_suite_has_the_four_categories() {
    let suite = Suite::load(&root().join("examples/security-audit/suite.toml")).unwrap();
    let counts = suite.category_counts();
    let get = |c: &str| counts.iter().find(|(k, _)| k == c).map(|(_, n)| *n);
    assert_eq!(get("seen"), Some(20));
    assert_eq!(get("heldout"), Some(30));
    assert_eq!(get("ood"), Some(36));
    assert!(get("guard").unwrap() >= 60);
    let guard: Vec<_> = suite.cases.iter().filter(|c| c.category == "guard").collect();
    let zh = guard.iter().filter(|c| c.tags.iter().any(|t| t == "zh")).count();
    assert!(zh >= 20 && guard.len() - zh >= 30, "bilingual guard suite: {zh} Chinese of {}", guard.len());
    assert!(guard.iter().all(|c| !c.reference.is_empty() && !c.keywords.is_empty()));
    assert_eq!(suite.used_rubrics().len(), 2);
    assert!(suite.files.len() >= 7, "{:?}", suite.files.keys());
}

#[test]
fn reference_reports_pass_the_security_rubric_and_broken_ones_fail() {
    let suite = Suite::load(&root().join("examples/security-audit/suite.toml")).unwrap();
    let demo: Vec<ScoredCase> = suite.scored_cases().filter(|c| c.case.category != "guard").collect();
    let references: Vec<String> = demo.iter().map(|c| c.case.reference.clone()).collect();
    for (c, s) in demo.iter().zip(score(&demo, &references)) {
        assert!(s.passed && (s.score - 1.0).abs() < 1e-9, "{}: {:?}", c.case.id, s.checks);
    }
    let broken = demo[0].case.reference.replace("Location:", "Where:");
    let s = score(&demo[..1], &[broken]).remove(0);
    assert!(!s.passed);
    let failed: Vec<&str> = s.checks.iter().filter(|c| !c.passed).map(|c| c.check.as_str()).collect();
    assert!(failed.len() == 2, "{failed:?}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const RUBRIC: &str = "name = \"r\"\n[[checks]]\nname = \"len\"\nscorer = \"length\"\nmin_chars = 1\n";

#[test]
fn training_overlap_marks_seen_and_rejects_leaks() {
    let dir = scratch("suite-overlap");
    write(&dir, "train.jsonl", "{\"instruction\": \"Say hi\", \"output\": \"hi\"}\n{\"instruction\": \"Add 2 and 2\", \"output\": \"4\"}\n");
    // Same prompt as training after normalization (case, punctuation, spacing).
    write(&dir, "mixed.jsonl", "{\"instruction\": \"say   HI!\", \"output\": \"hi\"}\n{\"instruction\": \"Name a colour\", \"output\": \"red\"}\n");
    write(&dir, "rubric.toml", RUBRIC);
    let suite_text = "name = \"s\"\nrubric = \"rubric.toml\"\ntrain = \"train.jsonl\"\n[[sets]]\ncategory = \"auto\"\ncases = \"mixed.jsonl\"\n";
    let suite = Suite::load(&write(&dir, "auto.toml", suite_text)).unwrap();
    let cats: Vec<&str> = suite.cases.iter().map(|c| c.category.as_str()).collect();
    assert_eq!(cats, ["seen", "heldout"]);
    let leak = Suite::load(&write(&dir, "leak.toml", &suite_text.replace("\"auto\"", "\"heldout\""))).unwrap_err();
    assert!(matches!(leak, Error::Leak { count: 1, .. }), "{leak}");
    assert!(leak.to_string().contains("mixed.jsonl:1"), "{leak}");
}

#[test]
fn suite_errors_name_the_file_and_place() {
    let dir = scratch("suite-errors");
    write(&dir, "rubric.toml", RUBRIC);
    write(&dir, "cases.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"output\": \n");
    let e =
        Suite::load(&write(&dir, "s.toml", "name = \"s\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n")).unwrap_err();
    assert!(e.to_string().contains("cases.jsonl:2"), "{e}");
    let e =
        Suite::load(&write(&dir, "t.toml", "name = \"s\"\nrubric = \"missing.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n")).unwrap_err();
    assert!(e.to_string().contains("missing.toml"), "{e}");
    let e = Suite::load(&write(&dir, "u.toml", "name = \"s\"\nrubrik = \"x\"\n")).unwrap_err();
    assert!(e.to_string().contains("rubrik"), "{e}");
    write(&dir, "dup.jsonl", "{\"id\": \"x\", \"instruction\": \"a\", \"output\": \"b\"}\n{\"id\": \"x\", \"instruction\": \"c\", \"output\": \"d\"}\n");
    let e = Suite::load(&write(&dir, "v.toml", "name = \"s\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"dup.jsonl\"\n")).unwrap_err();
    assert!(e.to_string().contains("duplicate case id `x`"), "{e}");
}

#[test]
fn suite_new_builds_a_suite_from_a_split_and_refuses_leaks() {
    let dir = scratch("suite-new");
    let data = root().join("examples/security-audit");
    let out = dir.join("suite.toml");
    let rubric = root().join("rubrics/security-report.toml");
    let args = |heldout: &Path| {
        vec![
            "eval".to_string(),
            "suite".into(),
            "new".into(),
            "--train".into(),
            data.join("train.jsonl").display().to_string(),
            "--heldout".into(),
            heldout.display().to_string(),
            "--ood".into(),
            data.join("ood.jsonl").display().to_string(),
            "--rubric".into(),
            rubric.display().to_string(),
            "--guard".into(),
            "--seen-limit".into(),
            "10".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    // Run from a directory outside the checkout, as an installed binary would be: the guard
    // suite comes from inside the binary and is written beside the new suite.
    let elsewhere = scratch("suite-new-cwd");
    let run = |a: Vec<String>| std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&a).current_dir(&elsewhere).output().expect("run tunelab");
    let ok = run(args(&data.join("heldout.jsonl")));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let suite = Suite::load(&out).unwrap();
    let counts = suite.category_counts();
    assert_eq!(&counts[..3], &[("seen".to_string(), 10), ("heldout".to_string(), 30), ("ood".to_string(), 36)]);
    assert_eq!(counts[3], ("guard".to_string(), 64));
    for f in ["suite.toml", "rubric.toml", "cases.jsonl"] {
        let shipped = std::fs::read(root().join("rubrics/guard").join(f)).unwrap();
        assert_eq!(std::fs::read(dir.join("guard").join(f)).unwrap(), shipped, "guard/{f} written beside the suite");
    }
    // An edited guard file is never overwritten.
    std::fs::write(dir.join("guard/rubric.toml"), "# edited\n").unwrap();
    std::fs::remove_file(&out).unwrap();
    let refused = run(args(&data.join("heldout.jsonl")));
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("differs from the shipped guard suite"));
    std::fs::remove_dir_all(dir.join("guard")).unwrap();
    assert!(run(args(&data.join("heldout.jsonl"))).status.success());
    // A held-out file that repeats a training case is refused, and no suite is written.
    std::fs::remove_file(&out).unwrap();
    let leaky = dir.join("leaky.jsonl");
    let mut text = std::fs::read_to_string(data.join("heldout.jsonl")).unwrap();
    text.push_str(std::fs::read_to_string(data.join("train.jsonl")).unwrap().lines().nth(5).unwrap());
    text.push('\n');
    std::fs::write(&leaky, text).unwrap();
    let bad = run(args(&leaky));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("held-out case(s) appear in the training file") && err.contains("leaky.jsonl:31"), "{err}");
    assert!(!out.exists());
}

#[test]
fn rubric_files_shipped_parse() {
    for f in ["rubrics/security-report.toml", "rubrics/guard/rubric.toml"] {
        let r = Rubric::load(&root().join(f)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!r.checks.is_empty());
    }
}

#[test]
fn embedding_cosines_match_sentence_transformers() {
    let embedder = Embedder::load(&minilm_path()).unwrap();
    let dir = root().join("tests/vectors/scorers");
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(name)).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let pairs = read("pairs.jsonl");
    let expected = read("embedding_expected.jsonl");
    let mut worst: f64 = 0.0;
    for e in &expected {
        let pair = pairs.iter().find(|p| p["id"] == e["id"]).unwrap();
        let (r, c) = (pair["reference"].as_str().unwrap(), pair["candidate"].as_str().unwrap());
        let v = embedder.embed(&[r, c]).unwrap();
        let cos = cosine(&v[0], &v[1]);
        let want = e["cosine"].as_f64().unwrap();
        worst = worst.max((cos - want).abs());
        assert!((cos - want).abs() < 1e-4, "pair {}: cosine {cos} vs sentence-transformers {want}", e["id"]);
        for (k, h) in e["ref_embedding_head"].as_array().unwrap().iter().enumerate() {
            assert!((f64::from(v[0][k]) - h.as_f64().unwrap()).abs() < 1e-4, "pair {} dim {k}", e["id"]);
        }
    }
    assert!(expected.len() >= 50);
    eprintln!("largest cosine difference vs sentence-transformers: {worst:.2e}");
}

/// Predictions are matched by id, else by the whole prompt: a prediction for a prompt that
/// merely contains a case's prompt is not taken, repeated ids and equally fitting
/// predictions are errors naming the lines.
#[test]
fn predictions_match_whole_prompts_and_refuse_duplicates() {
    use tunelab_evalsuite::backend::predictions::PredictionsBackend;
    use tunelab_evalsuite::backend::Backend;
    let dir = scratch("predictions-matching");
    write(&dir, "rubric.toml", RUBRIC);
    write(&dir, "cases.jsonl", "{\"instruction\": \"cat\", \"output\": \"meow\"}\n{\"instruction\": \"What is 2+2?\", \"output\": \"4\"}\n");
    let suite =
        Suite::load(&write(&dir, "s.toml", "name = \"s\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n")).unwrap();
    let cases: Vec<_> = suite.cases.iter().collect();
    let generate = |preds: &str| -> Result<Vec<String>, String> {
        let backend = PredictionsBackend::load(&write(&dir, "p.jsonl", preds)).map_err(|e| e.to_string())?;
        let mut out = vec![String::new(); cases.len()];
        backend.generate(&cases, &Default::default(), &mut |i, g| out[i] = g.unwrap().text).map_err(|e| e.to_string())?;
        Ok(out)
    };
    let templated = |p: &str, o: &str| format!("{{\"prompt\": \"<|im_start|>user\\n{p}<|im_end|>\\n<|im_start|>assistant\\n\", \"predict\": \"{o}\"}}\n");
    // Whole templated prompts match; "concatenate two lists" does not stand in for "cat".
    let ok = generate(&(templated("cat", "purr") + &templated("What is 2+2?", "four"))).unwrap();
    assert_eq!(ok, ["purr", "four"]);
    let err = generate(&(templated("concatenate two lists", "x") + &templated("What is 2+2?", "four"))).unwrap_err();
    assert!(err.contains("no prediction for 1 case(s)") && err.contains("cases-1"), "{err}");
    // Two predictions for one prompt, neither labelled: ambiguous, with their lines.
    let err = generate(&(templated("cat", "a") + &templated("cat", "b") + &templated("What is 2+2?", "four"))).unwrap_err();
    assert!(err.contains("fit several predictions") && err.contains("lines 1, 2"), "{err}");
    // A repeated id is refused at load, naming both lines.
    let err = generate("{\"id\": \"x\", \"output\": \"1\"}\n{\"id\": \"x\", \"output\": \"2\"}\n").unwrap_err();
    assert!(err.contains("p.jsonl:2") && err.contains("repeats line 1"), "{err}");
}
