//! An LLM judge through any OpenAI-compatible endpoint: a rubric prompt asking for a 1–10
//! score, parsed from the reply; or pairwise judging of output vs reference, asked in both
//! orders (position bias shows up as disagreement, which is recorded).

use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use serde::Deserialize;
use tunelab::{GenerationConfig, Message};

use super::{params, Item, JudgePolicy, ScoreContext, Scorer, Value};
use crate::case::Case;
use crate::chat::{ChatClient, HttpConfig};
use crate::error::{Error, Result};
use crate::excerpt::truncate;

/// Judge settings from a rubric check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// Base URL of the endpoint.
    pub endpoint: String,
    /// Served model name.
    pub model: String,
    /// What a good answer does (put into the prompt).
    #[serde(default = "default_criteria")]
    pub criteria: String,
    /// Compare output and reference in both orders instead of scoring 1–10.
    #[serde(default)]
    pub pairwise: bool,
    /// Seconds per request.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_criteria() -> String {
    "correct, complete, follows the instruction, clear and concise".into()
}

fn default_timeout() -> u64 {
    120
}

impl JudgeSpec {
    /// From a rubric check's parameters.
    pub fn build(table: toml::Table) -> std::result::Result<Arc<dyn Scorer>, String> {
        if table.contains_key("api_key_env") {
            return Err(
                "`api_key_env` is not read from rubrics (a rubric must not choose which secret is sent where); pass --judge-api-key-env VAR to eval run".into(),
            );
        }
        Ok(Arc::new(params::<Self>(table)?.validated()?))
    }

    /// Checks the fields.
    pub fn validated(self) -> std::result::Result<Self, String> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(format!("judge endpoint {:?} must start with http:// or https://", self.endpoint));
        }
        if self.model.trim().is_empty() {
            return Err("judge `model` is empty".into());
        }
        Ok(self)
    }

    /// The judge's connection settings under the user's `policy` (the key variable is the
    /// user's, never the rubric's); an error when the user has not allowed the endpoint.
    pub fn http_config(&self, policy: &JudgePolicy) -> Result<HttpConfig> {
        if !policy.allows(&self.endpoint) {
            return Err(Error::Invalid(format!(
                "the rubric's judge would send outputs to {}; allow it with --allow-judge-endpoint {} (and name its key with --judge-api-key-env VAR)",
                self.endpoint, self.endpoint
            )));
        }
        let mut cfg = HttpConfig::new(&self.endpoint, &self.model);
        cfg.api_key_env = policy.api_key_env.clone();
        cfg.max_body_bytes = policy.max_body_bytes.unwrap_or(cfg.max_body_bytes);
        cfg.timeout = Duration::from_secs(self.timeout_s);
        Ok(cfg)
    }
}

impl Scorer for JudgeSpec {
    fn kind(&self) -> &'static str {
        "judge"
    }

    fn default_threshold(&self) -> f64 {
        0.5
    }

    /// Before generation starts: the client is built (its key variable read) and the
    /// endpoint contacted, so a dead server, a wrong key or an unknown model stops the run
    /// before any output is generated.
    fn prepare(&self, ctx: &ScoreContext<'_>) -> Result<()> {
        ctx.chat_client(&self.http_config(ctx.judges())?)?.check_model()
    }

    /// Requests go out in parallel (one per rayon thread); a failed request is that
    /// output's failed value, not the run's end.
    fn score(&self, items: &[Item<'_>], ctx: &ScoreContext<'_>) -> Result<Vec<Value>> {
        let client = ctx.chat_client(&self.http_config(ctx.judges())?)?;
        Ok(items
            .par_iter()
            .with_max_len(1)
            .map(|it| judge(&client, self, it.case, it.output).unwrap_or_else(|e| Value::failed(format!("judge failed: {e}"))))
            .collect())
    }
}

const DECODING: GenerationConfig = GenerationConfig { max_new_tokens: 64, temperature: 0.0, top_k: None, top_p: None, seed: 0, stop_strings: Vec::new() };

/// Scores one output with the judge.
pub fn judge(client: &ChatClient, spec: &JudgeSpec, case: &Case, output: &str) -> Result<Value> {
    if spec.pairwise {
        return pairwise(client, spec, case, output);
    }
    let prompt = format!(
        "You are grading an answer to a task. A good answer is {criteria}.\n\n[Task]\n{task}\n\n[Reference answer]\n{reference}\n\n[Answer to grade]\n{output}\n\n\
         Rate the answer from 1 (useless) to 10 (as good as or better than the reference). Reply with one line: `Score: N`.",
        criteria = spec.criteria,
        task = case.prompt_text(),
        reference = case.reference,
    );
    let reply = client.chat(&[Message::user(prompt)], &DECODING)?;
    let score = parse_score(&reply.text).ok_or_else(|| Error::Endpoint {
        url: client.base.clone(),
        message: format!("the judge's reply has no 1–10 score: {:?}", truncate(&reply.text, 200)),
    })?;
    Ok(Value::with(score / 10.0, format!("judge: {score}/10")))
}

fn pairwise(client: &ChatClient, spec: &JudgeSpec, case: &Case, output: &str) -> Result<Value> {
    let ask = |a: &str, b: &str| -> Result<Option<char>> {
        let prompt = format!(
            "Which answer to the task is better? A good answer is {criteria}.\n\n[Task]\n{task}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\nReply with exactly one letter: A or B.",
            criteria = spec.criteria,
            task = case.prompt_text(),
        );
        Ok(parse_choice(&client.chat(&[Message::user(prompt)], &DECODING)?.text))
    };
    let first = ask(output, &case.reference)?; // output is A
    let second = ask(&case.reference, output)?; // output is B
    let wins = u8::from(first == Some('A')) + u8::from(second == Some('B'));
    let agree = matches!((first, second), (Some('A'), Some('B')) | (Some('B'), Some('A')));
    let detail = format!("output first: {}, reference first: {}{}", show(first), show(second), if agree { "" } else { " (orders disagree)" });
    Ok(Value::with(f64::from(wins) / 2.0, detail))
}

fn show(c: Option<char>) -> String {
    c.map_or("no verdict".into(), |c| c.to_string())
}

/// The score in `Score: N` (or the first integer 1–10 in the reply).
pub fn parse_score(reply: &str) -> Option<f64> {
    let lower = reply.to_lowercase();
    let from = lower.find("score").map_or(0, |i| i + 5);
    let numbers = lower[from..].split(|c: char| !c.is_ascii_digit() && c != '.').filter(|s| !s.is_empty());
    numbers.filter_map(|s| s.trim_end_matches('.').parse::<f64>().ok()).find(|x| (1.0..=10.0).contains(x))
}

/// `A` or `B` from a pairwise verdict.
pub fn parse_choice(reply: &str) -> Option<char> {
    let t = reply.trim().trim_start_matches(['[', '(', '*', '"', '\'']).to_uppercase();
    let first = t.chars().next()?;
    if matches!(first, 'A' | 'B') && t.chars().nth(1).is_none_or(|c| !c.is_alphanumeric()) {
        return Some(first);
    }
    if t.contains("ANSWER A") {
        Some('A')
    } else if t.contains("ANSWER B") {
        Some('B')
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scores_and_choices() {
        assert_eq!(parse_score("Score: 7"), Some(7.0));
        assert_eq!(parse_score("I'd say score 10/10."), Some(10.0));
        assert_eq!(parse_score("The answer gets 8."), Some(8.0));
        assert_eq!(parse_score("Score: 0, 42"), None);
        assert_eq!(parse_choice("B"), Some('B'));
        assert_eq!(parse_choice("**A**"), Some('A'));
        assert_eq!(parse_choice("Answer B is better"), Some('B'));
        assert_eq!(parse_choice("Both"), None);
    }
}
