//! Predictions made elsewhere, scored here: JSONL lines with `id` + `output` (or `predict`),
//! or LLaMA-Factory's `generated_predictions.jsonl` (`prompt`, `predict`, `label`), matched
//! to cases by id, else by prompt: equal after the chat template's markup is taken off
//! (LLaMA-Factory writes the templated prompt) and both are normalized. Nothing is matched by
//! a part of a prompt; a repeated id, or a case that several predictions fit equally (the
//! label breaks ties), is an error naming the lines.

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
    line: usize,
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
        let bytes = tunelab::fsutil::read_input(path)?;
        let text = tunelab::fsutil::decode_utf8(path, &bytes)?;
        let mut predictions = Vec::new();
        let mut id_lines: HashMap<String, usize> = HashMap::new();
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
            if let Some(id) = &id {
                if let Some(first) = id_lines.insert(id.clone(), i + 1) {
                    return Err(at(format!("id {id:?} repeats line {first} (each case takes one prediction)")));
                }
            }
            predictions.push(Prediction { line: i + 1, id, prompt, label: field("label"), output });
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
            weights: None,
            device: None,
        };
        Ok(Self { path: path.to_path_buf(), predictions, info })
    }

    /// The prediction for each case (index into `predictions`); an error lists the cases
    /// with none and those several predictions fit.
    fn match_cases(&self, cases: &[&Case]) -> Result<Vec<usize>> {
        let by_id: HashMap<&str, usize> = self.predictions.iter().enumerate().filter_map(|(i, p)| Some((p.id.as_deref()?, i))).collect();
        let mut by_prompt: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in self.predictions.iter().enumerate() {
            if let Some(prompt) = &p.prompt {
                by_prompt.entry(normalize_text(&untemplated(prompt))).or_default().push(i);
            }
        }
        let mut found = Vec::with_capacity(cases.len());
        let (mut missing, mut ambiguous) = (Vec::new(), Vec::new());
        for case in cases {
            if let Some(&i) = by_id.get(case.id.as_str()) {
                found.push(i);
                continue;
            }
            let candidates = by_prompt.get(&normalize_text(&case.prompt_text())).map(Vec::as_slice).unwrap_or_default();
            let reference = normalize_text(&case.reference);
            let labelled: Vec<usize> =
                candidates.iter().copied().filter(|&i| self.predictions[i].label.as_deref().is_some_and(|l| normalize_text(l) == reference)).collect();
            match (candidates, labelled.as_slice()) {
                ([], _) => missing.push(case.id.clone()),
                ([only], _) | (_, [only]) => found.push(*only),
                (all, _) => {
                    let lines: Vec<String> = all.iter().map(|&i| self.predictions[i].line.to_string()).collect();
                    ambiguous.push(format!("{} (lines {})", case.id, lines.join(", ")));
                }
            }
        }
        let list = |v: &[String]| format!("{}{}", v.iter().take(8).cloned().collect::<Vec<_>>().join(", "), if v.len() > 8 { ", …" } else { "" });
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("no prediction for {} case(s) (matched by id, else by whole prompt): {}", missing.len(), list(&missing)));
        }
        if !ambiguous.is_empty() {
            problems.push(format!("{} case(s) fit several predictions equally (give ids or labels): {}", ambiguous.len(), list(&ambiguous)));
        }
        match problems.is_empty() {
            true => Ok(found),
            false => Err(Error::Records { path: self.path.clone(), line: None, message: problems.join("; ") }),
        }
    }
}

/// A prompt without chat-template markup: special tokens (`<|im_start|>`, `<s>`, `[INST]` …)
/// removed and, when the prompt is laid out in role turns, only the non-system turns' text
/// (what `Case::prompt_text` holds).
fn untemplated(prompt: &str) -> String {
    const ROLES: [&str; 5] = ["system", "user", "assistant", "human", "gpt"];
    const MARKERS: [&str; 6] = ["<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"];
    let mut text = String::with_capacity(prompt.len());
    let mut rest = prompt;
    // `<|…|>` tokens (ChatML, Llama 3, Qwen) become line breaks.
    while let Some(start) = rest.find("<|") {
        match rest[start..].find("|>") {
            Some(len) => {
                text.push_str(&rest[..start]);
                text.push('\n');
                rest = &rest[start + len + 2..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    for m in MARKERS {
        text = text.replace(m, "\n");
    }
    let is_role = |line: &str| ROLES.contains(&line.trim().trim_end_matches(':').to_lowercase().as_str());
    if !text.lines().any(is_role) {
        return text;
    }
    let mut turns = Vec::new();
    let mut in_system = false;
    for line in text.lines() {
        if is_role(line) {
            in_system = line.trim().trim_end_matches(':').eq_ignore_ascii_case("system");
        } else if !in_system {
            turns.push(line);
        }
    }
    turns.join("\n")
}

impl Backend for PredictionsBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generates(&self) -> bool {
        false
    }

    fn generate(&self, cases: &[&Case], _decoding: &GenerationConfig, done: &mut OnGenerated<'_>) -> Result<()> {
        let found = self.match_cases(cases)?;
        for (i, p) in found.into_iter().enumerate() {
            let pred = &self.predictions[p];
            done(
                i,
                Ok(Generated {
                    text: pred.output.clone(),
                    prompt_tokens: None,
                    completion_tokens: None,
                    cached_prompt_tokens: None,
                    latency_s: 0.0,
                    finish: "predicted".into(),
                }),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::untemplated;
    use tunelab::data::normalize_text;

    #[test]
    fn chat_templates_are_taken_off_prompts() {
        let want = "what is 2 2";
        for templated in [
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "<s>[INST] What is 2+2? [/INST]",
            "What is 2+2?",
        ] {
            assert_eq!(normalize_text(&untemplated(templated)), want, "{templated:?}");
        }
        // A prompt that merely contains another is not it.
        assert_ne!(normalize_text(&untemplated("<|im_start|>user\nconcatenate two lists<|im_end|>")), "cat");
    }

    /// A UTF-8 BOM is read past (editors on Windows write one), UTF-16 and bad bytes are
    /// named with the line, and a repeated id names both lines.
    #[test]
    fn predictions_files_read_like_datasets() {
        let dir = std::env::temp_dir().join(format!("tunelab-predictions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            super::PredictionsBackend::load(&path).map(|b| b.predictions.len()).map_err(|e| e.to_string())
        };
        assert_eq!(load("bom.jsonl", b"\xEF\xBB\xBF{\"id\": \"a\", \"output\": \"x\"}\n"), Ok(1));
        assert!(load("utf16.jsonl", b"\xFF\xFE{\0").unwrap_err().contains("UTF-16"));
        let err = load("bad.jsonl", b"{\"id\": \"a\", \"output\": \"x\"}\n{\"id\": \"b\", \"output\": \"\xC3x\"}\n").unwrap_err();
        assert!(err.contains("bad.jsonl:2:") && err.contains("invalid UTF-8"), "{err}");
        let err =
            load("dup.jsonl", b"{\"id\": \"a\", \"output\": \"x\"}\n{\"id\": \"b\", \"output\": \"y\"}\n{\"id\": \"a\", \"output\": \"z\"}\n").unwrap_err();
        assert!(err.contains(":3") && err.contains("repeats line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
