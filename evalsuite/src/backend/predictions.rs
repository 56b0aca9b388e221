//! Predictions made elsewhere, scored here: JSONL lines with `id` + `output` (or `predict`),
//! or LLaMA-Factory's `generated_predictions.jsonl` (`prompt`, `predict`, `label`), matched
//! to cases by id, else by normalized prompt (LLaMA-Factory's prompt is chat-templated, so a
//! case matches when its normalized prompt is contained in it; the label breaks ties).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tunelab::data::normalize_text;
use tunelab::GenerationConfig;

use super::{Backend, BackendInfo, Generated, OnGenerated};
use crate::case::Case;
use crate::error::{Error, Result};
use crate::hashing;

/// One prediction line.
#[derive(Debug, Clone)]
struct Prediction {
    id: Option<String>,
    prompt: Option<String>,
    label: Option<String>,
    output: String,
}

/// Outputs read from a predictions file.
pub struct PredictionsBackend {
    path: PathBuf,
    predictions: Vec<Prediction>,
    info: BackendInfo,
}

impl PredictionsBackend {
    /// Reads the file; malformed lines are errors naming file:line.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::reading(path, e))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::Records { path: path.to_path_buf(), line: None, message: format!("not UTF-8 (byte {})", e.valid_up_to()) })?;
        let mut predictions = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |message: String| Error::record_at(path, i + 1, message);
            let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not valid JSON ({e})")))?;
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let output = field("output")
                .or_else(|| field("predict"))
                .or_else(|| field("prediction"))
                .ok_or_else(|| at("no `output` or `predict` string field".into()))?;
            let id = v.get("id").and_then(|x| x.as_str().map(str::to_string).or_else(|| x.as_i64().map(|n| n.to_string())));
            let prompt = field("prompt").or_else(|| field("instruction"));
            if id.is_none() && prompt.is_none() {
                return Err(at("needs an `id` or a `prompt` to match it to a case".into()));
            }
            predictions.push(Prediction { id, prompt, label: field("label"), output });
        }
        if predictions.is_empty() {
            return Err(Error::Records { path: path.to_path_buf(), line: None, message: "holds no predictions".into() });
        }
        let info = BackendInfo {
            kind: "predictions".into(),
            model: path.display().to_string(),
            model_sha256: Some(hashing::sha256_bytes(&bytes)),
            adapter: None,
            adapter_sha256: None,
            endpoint: None,
        };
        Ok(Self { path: path.to_path_buf(), predictions, info })
    }

    /// The prediction for each case (index into `predictions`), or the ids with none.
    fn match_cases(&self, cases: &[&Case]) -> Result<Vec<usize>, Vec<String>> {
        let by_id: HashMap<&str, usize> = self.predictions.iter().enumerate().filter_map(|(i, p)| Some((p.id.as_deref()?, i))).collect();
        let prompts: Vec<Option<String>> = self.predictions.iter().map(|p| p.prompt.as_deref().map(normalize_text)).collect();
        let labels: Vec<Option<String>> = self.predictions.iter().map(|p| p.label.as_deref().map(normalize_text)).collect();
        let mut found = Vec::with_capacity(cases.len());
        let mut missing = Vec::new();
        for case in cases {
            if let Some(&i) = by_id.get(case.id.as_str()) {
                found.push(i);
                continue;
            }
            let want = normalize_text(&case.prompt_text());
            let reference = normalize_text(&case.reference);
            let candidates: Vec<usize> = prompts
                .iter()
                .enumerate()
                .filter(|(_, p)| p.as_ref().is_some_and(|p| *p == want || (!want.is_empty() && p.contains(&want))))
                .map(|(i, _)| i)
                .collect();
            let pick = candidates
                .iter()
                .copied()
                .find(|&i| prompts[i].as_deref() == Some(want.as_str()) && labels[i].as_ref().is_none_or(|l| *l == reference))
                .or_else(|| candidates.iter().copied().find(|&i| labels[i].as_deref() == Some(reference.as_str())))
                .or_else(|| candidates.first().copied());
            match pick {
                Some(i) => found.push(i),
                None => missing.push(case.id.clone()),
            }
        }
        if missing.is_empty() {
            Ok(found)
        } else {
            Err(missing)
        }
    }
}

impl Backend for PredictionsBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generates(&self) -> bool {
        false
    }

    fn generate(&self, cases: &[&Case], _decoding: &GenerationConfig, done: &mut OnGenerated<'_>) -> Result<()> {
        let found = self.match_cases(cases).map_err(|missing| Error::Records {
            path: self.path.clone(),
            line: None,
            message: format!(
                "no prediction for {} case(s) (matched by id, else by prompt): {}{}",
                missing.len(),
                missing.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
                if missing.len() > 8 { ", …" } else { "" }
            ),
        })?;
        for (i, p) in found.into_iter().enumerate() {
            let pred = &self.predictions[p];
            done(i, Ok(Generated { text: pred.output.clone(), prompt_tokens: None, completion_tokens: None, latency_s: 0.0, finish: "predicted".into() }));
        }
        Ok(())
    }
}
