//! Oracle test for the pure-Rust text metrics: every pair in
//! `tests/vectors/scorers/pairs.jsonl` is scored with ROUGE-1/2/L and sentence BLEU and
//! compared with the values `record_scorers.py` recorded from rouge-score and sacrebleu
//! (`expected.jsonl`): ROUGE precision/recall/F1 within 1e-9, BLEU within 1e-6 (0–100 scale).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tunelab_evalsuite::metrics::{bleu::sentence_bleu, rouge::rouge};

const ROUGE_TOL: f64 = 1e-9;
const BLEU_TOL: f64 = 1e-6;
const SHOW_MISMATCHES: usize = 10;

/// `tests/vectors/scorers/` at the repository root.
fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("tests/vectors/scorers")
}

/// Parses a JSON Lines file into one `Value` per non-blank line.
fn read_jsonl(name: &str) -> Vec<Value> {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().filter(|line| !line.trim().is_empty()).map(|line| serde_json::from_str(line).expect("valid JSON line")).collect()
}

fn id_of(row: &Value) -> u64 {
    row["id"].as_u64().expect("integer id")
}

fn number(value: &Value, what: &str) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

/// One metric value that differs from the oracle.
struct Mismatch {
    id: u64,
    metric: String,
    got: f64,
    want: f64,
}

/// Compares one value and records a mismatch beyond `tol`.
fn check(out: &mut Vec<Mismatch>, id: u64, metric: String, got: f64, want: f64, tol: f64) {
    if got.is_nan() || want.is_nan() || (got - want).abs() > tol {
        out.push(Mismatch { id, metric, got, want });
    }
}

/// Checks every ROUGE and BLEU value of one pair; returns the number of values checked.
fn check_pair(pair: &Value, expected: &Value, out: &mut Vec<Mismatch>) -> usize {
    let id = id_of(pair);
    let reference = pair["reference"].as_str().expect("reference string");
    let candidate = pair["candidate"].as_str().expect("candidate string");
    let scores = rouge(reference, candidate);
    let variants = [("rouge1", scores.rouge1), ("rouge2", scores.rouge2), ("rougeL", scores.rouge_l)];
    for (name, prf) in variants {
        let got = [("p", prf.precision), ("r", prf.recall), ("f", prf.f1)];
        for (field, value) in got {
            let metric = format!("{name}.{field}");
            let want = number(&expected[name][field], &metric);
            check(out, id, metric, value, want, ROUGE_TOL);
        }
    }
    let want = number(&expected["bleu"], "bleu");
    check(out, id, "bleu".into(), sentence_bleu(reference, candidate), want, BLEU_TOL);
    10
}

#[test]
fn rouge_and_bleu_match_python_reference() {
    let pairs = read_jsonl("pairs.jsonl");
    let expected: HashMap<u64, Value> = read_jsonl("expected.jsonl").into_iter().map(|row| (id_of(&row), row)).collect();
    assert!(!pairs.is_empty(), "no pairs");
    assert_eq!(pairs.len(), expected.len(), "pairs.jsonl and expected.jsonl differ in length");

    let texts: HashMap<u64, &Value> = pairs.iter().map(|p| (id_of(p), p)).collect();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for pair in &pairs {
        let row = expected.get(&id_of(pair)).unwrap_or_else(|| panic!("no expected row for id {}", id_of(pair)));
        checked += check_pair(pair, row, &mut mismatches);
    }

    if !mismatches.is_empty() {
        let mut report = format!("{} of {checked} values differ; first ones:\n", mismatches.len());
        for m in mismatches.iter().take(SHOW_MISMATCHES) {
            let pair = texts[&m.id];
            report += &format!(
                "  id {} {}: got {:.12} want {:.12}\n    reference: {:?}\n    candidate: {:?}\n",
                m.id,
                m.metric,
                m.got,
                m.want,
                pair["reference"].as_str().unwrap_or_default(),
                pair["candidate"].as_str().unwrap_or_default()
            );
        }
        panic!("{report}");
    }
}

/// LLaMA-Factory's own metrics (`mode = "llamafactory"`): every pair's BLEU-4 and ROUGE-1/2/L
/// equal to the 4-decimal values LLaMA-Factory's `ComputeSimilarity` gives (jieba,
/// rouge-chinese and NLTK, recorded by `record_llamafactory_metrics.py`), so their means are
/// `predict_results.json`'s figures.
#[test]
fn llamafactory_metrics_match_its_python_packages() {
    use tunelab_evalsuite::metrics::llamafactory;
    let pairs = read_jsonl("pairs.jsonl");
    let expected: std::collections::HashMap<u64, Value> = read_jsonl("llamafactory_expected.jsonl").into_iter().map(|r| (id_of(&r), r)).collect();
    let (mut mismatches, mut sums) = (Vec::new(), [0f64; 4]);
    for pair in &pairs {
        let id = id_of(pair);
        let want = &expected[&id];
        let (reference, candidate) = (pair["reference"].as_str().unwrap(), pair["candidate"].as_str().unwrap());
        let rouge = llamafactory::rouge(reference, candidate);
        let got = [("bleu-4", llamafactory::bleu4(reference, candidate)), ("rouge-1", rouge.rouge_1), ("rouge-2", rouge.rouge_2), ("rouge-l", rouge.rouge_l)];
        for (i, (metric, value)) in got.into_iter().enumerate() {
            sums[i] += value;
            let w = number(&want[metric], metric);
            if value != w {
                mismatches.push(format!("pair {id} {metric}: {value} (LLaMA-Factory {w}) — {reference:?} / {candidate:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} of {} values differ:\n{}", mismatches.len(), pairs.len() * 4, mismatches.join("\n"));
    let cjk = pairs.iter().filter(|p| p["reference"].as_str().unwrap().chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))).count();
    assert!(cjk >= 50, "the vectors need Chinese pairs ({cjk})");
    eprintln!(
        "means over {} pairs (predict_results.json): bleu-4 {:.4}, rouge-1 {:.4}, rouge-2 {:.4}, rouge-l {:.4}",
        pairs.len(),
        sums[0] / 300.0,
        sums[1] / 300.0,
        sums[2] / 300.0,
        sums[3] / 300.0
    );
}
