//! Scoring a run's outputs: text scorers per case in parallel; model scorers in batches
//! (embeddings), through the backend (perplexity) or through the judge's endpoint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use rayon::prelude::*;

use crate::backend::http::ChatClient;
use crate::backend::{Backend, Generated};
use crate::rubric::Check;
use crate::scorers::embedding::{cosine, Embedder, DEFAULT_MODEL_DIR};
use crate::scorers::{judge, Scorer, Value};
use crate::suite::Case;

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Check name.
    pub check: String,
    /// Scorer kind.
    pub scorer: String,
    /// Weight in the case score.
    pub weight: f64,
    /// Pass threshold.
    pub threshold: f64,
    /// Raw value.
    pub value: f64,
    /// Whether the value passes the threshold.
    pub passed: bool,
    /// Contribution in 0–1.
    pub score: f64,
    /// Why (what was missing …).
    pub detail: String,
}

/// A case's checks and their weighted mean.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseScore {
    /// Per-check results, in rubric order.
    pub checks: Vec<CheckResult>,
    /// Weighted mean of check scores.
    pub score: f64,
    /// Whether every check passed.
    pub passed: bool,
}

/// Scores every case's output with its rubric.
pub fn score_all(cases: &[&Case], outputs: &[Generated], backend: &dyn Backend) -> anyhow::Result<Vec<CaseScore>> {
    let model_values = model_values(cases, outputs, backend)?;
    Ok(cases
        .par_iter()
        .zip(outputs)
        .enumerate()
        .map(|(i, (case, out))| {
            let values: Vec<Value> = case
                .rubric
                .checks
                .iter()
                .enumerate()
                .map(|(j, check)| match check.scorer.score_text(case, &out.text) {
                    Some(v) => v,
                    None => model_values.get(&(i, j)).cloned().unwrap_or_else(|| Value::with(f64::NAN, "not scored")),
                })
                .collect();
            case_score(&case.rubric.checks, values)
        })
        .collect())
}

/// Combines check values into a [`CaseScore`].
pub fn case_score(checks: &[Check], values: Vec<Value>) -> CaseScore {
    let results: Vec<CheckResult> = checks
        .iter()
        .zip(values)
        .map(|(c, v)| {
            let passed = v.value.is_finite() && c.passes(v.value);
            CheckResult {
                check: c.name.clone(),
                scorer: c.scorer.kind().to_string(),
                weight: c.weight,
                threshold: c.threshold,
                value: v.value,
                passed,
                score: c.scorer.score(v.value, passed),
                detail: v.detail,
            }
        })
        .collect();
    let total: f64 = results.iter().map(|r| r.weight).sum();
    let score = results.iter().map(|r| r.weight * r.score).sum::<f64>() / total;
    CaseScore { passed: results.iter().all(|r| r.passed), checks: results, score }
}

/// Values of the model scorers, keyed by (case index, check index).
fn model_values(cases: &[&Case], outputs: &[Generated], backend: &dyn Backend) -> anyhow::Result<HashMap<(usize, usize), Value>> {
    let mut values = HashMap::new();
    let wanted = |pred: &dyn Fn(&Scorer) -> bool| -> Vec<(usize, usize)> {
        cases.iter().enumerate().flat_map(|(i, c)| c.rubric.checks.iter().enumerate().filter(|(_, k)| pred(&k.scorer)).map(move |(j, _)| (i, j))).collect()
    };
    // Embeddings: one model load per model directory, texts embedded in batches.
    let mut by_model: HashMap<PathBuf, Vec<(usize, usize)>> = HashMap::new();
    for (i, j) in wanted(&|s| matches!(s, Scorer::Embedding(_))) {
        let Scorer::Embedding(dir) = &cases[i].rubric.checks[j].scorer else { unreachable!() };
        by_model.entry(dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR))).or_default().push((i, j));
    }
    for (dir, slots) in by_model {
        let embedder = Embedder::load(&dir).with_context(|| format!("loading the embedding model {} (scripts/fetch-models fetches it)", dir.display()))?;
        let texts: Vec<&str> = slots.iter().flat_map(|&(i, _)| [outputs[i].text.as_str(), cases[i].reference.as_str()]).collect();
        let vectors = embed_unique(&embedder, &texts)?;
        for (k, slot) in slots.iter().enumerate() {
            values.insert(*slot, Value::of(cosine(&vectors[2 * k], &vectors[2 * k + 1])));
        }
    }
    for (i, j) in wanted(&|s| matches!(s, Scorer::Perplexity)) {
        let v = match backend.perplexity(cases[i]) {
            Some(Ok(ppl)) => Value::of(ppl),
            Some(Err(e)) => Value::with(f64::NAN, format!("{e:#}")),
            None => Value::with(f64::NAN, format!("the {} backend cannot compute perplexity", backend.info().kind)),
        };
        values.insert((i, j), v);
    }
    let judged = wanted(&|s| matches!(s, Scorer::Judge(_)));
    let judge_of = |&(i, j): &(usize, usize)| match &cases[i].rubric.checks[j].scorer {
        Scorer::Judge(spec) => spec,
        _ => unreachable!("only judge checks are collected"),
    };
    // One client per distinct judge (endpoint, model, key), shared by its cases.
    let judge_key = |spec: &judge::JudgeSpec| (spec.endpoint.clone(), spec.model.clone(), spec.api_key_env.clone());
    let mut clients: HashMap<(String, String, Option<String>), ChatClient> = HashMap::new();
    for slot in &judged {
        let spec = judge_of(slot);
        if let std::collections::hash_map::Entry::Vacant(e) = clients.entry(judge_key(spec)) {
            e.insert(spec.client()?);
        }
    }
    let results = Mutex::new(Vec::new());
    judged.par_iter().with_max_len(1).for_each(|slot| {
        let spec = judge_of(slot);
        let client = &clients[&judge_key(spec)];
        let (i, _) = *slot;
        let v = judge::judge(client, spec, cases[i], &outputs[i].text).unwrap_or_else(|e| Value::with(f64::NAN, format!("judge failed: {e:#}")));
        results.lock().expect("not poisoned").push((*slot, v));
    });
    values.extend(results.into_inner().expect("not poisoned"));
    Ok(values)
}

/// Embeds each distinct text once.
fn embed_unique(embedder: &Embedder, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut unique: Vec<&str> = Vec::new();
    for t in texts {
        index.entry(t).or_insert_with(|| {
            unique.push(t);
            unique.len() - 1
        });
    }
    let vectors = embedder.embed(&unique)?;
    Ok(texts.iter().map(|t| vectors[index[t]].clone()).collect())
}
