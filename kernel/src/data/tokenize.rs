//! Turning an example into token ids and labels through the model's chat template.
//!
//! The conversation is rendered turn by turn; the text each assistant turn adds (its
//! content plus the template's end-of-turn tokens) is labelled, everything else (system,
//! user turns, template scaffolding) gets [`IGNORE_INDEX`]. Segments are tokenized
//! separately, as LLaMA-Factory does, so a label boundary never falls inside a token.

use serde::{Deserialize, Serialize};

use super::example::Example;
use crate::chat::{ChatTemplate, Role};
use crate::error::{Error, Result};
use crate::model::Tokenizer;

/// Label of a position that contributes no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Tokenization settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeOptions {
    /// Longest sequence in tokens; longer examples are shortened, keeping the response.
    pub cutoff_len: usize,
    /// Also learn the prompt tokens (labels everywhere).
    pub train_on_prompt: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self { cutoff_len: 1024, train_on_prompt: false }
    }
}

/// One tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Target of each position (the token itself; shifted by the loss), or [`IGNORE_INDEX`].
    pub labels: Vec<i64>,
    /// Prompt tokens before truncation.
    pub prompt_tokens: usize,
    /// Response tokens before truncation.
    pub response_tokens: usize,
    /// Whether the example was shortened to fit `cutoff_len`.
    pub truncated: bool,
}

/// Tokenizes `ex` with `template` and `tok`.
pub fn encode_example(ex: &Example, template: &ChatTemplate, tok: &Tokenizer, opts: &EncodeOptions) -> Result<Encoded> {
    let mut segments: Vec<(String, bool)> = Vec::new();
    let mut done = String::new();
    for (i, m) in ex.messages.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let prefix = template.render(&ex.messages[..i], true).map_err(|e| in_record(ex, e))?;
        let full = template.render(&ex.messages[..=i], false).map_err(|e| in_record(ex, e))?;
        let context = prefix.strip_prefix(done.as_str()).ok_or_else(|| unstable(ex))?;
        let reply = full.strip_prefix(prefix.as_str()).ok_or_else(|| unstable(ex))?;
        segments.push((context.to_string(), false));
        segments.push((reply.to_string(), true));
        done = full;
    }
    let mut ids = Vec::new();
    let mut labeled = Vec::new();
    let mut last_reply_start = 0;
    for (k, (text, is_reply)) in segments.iter().enumerate() {
        let mut seg = if k == 0 { tok.encode_with_bos(text)? } else { tok.encode(text)? };
        if *is_reply {
            last_reply_start = ids.len();
        }
        labeled.extend(std::iter::repeat_n(*is_reply || opts.train_on_prompt, seg.len()));
        ids.append(&mut seg);
    }
    let response_tokens = ids.len() - last_reply_start;
    if response_tokens == 0 || labeled.iter().all(|&l| !l) {
        return Err(Error::Template {
            line: None,
            message: format!("{}: the chat template renders no reply tokens for this record (nothing to learn); check the model's template", ex.source),
        });
    }
    let prompt_tokens = last_reply_start;
    let (ids, labeled, truncated) = fit(ids, labeled, last_reply_start, opts.cutoff_len);
    let labels = ids.iter().zip(&labeled).map(|(&id, &l)| if l { id as i64 } else { IGNORE_INDEX }).collect();
    Ok(Encoded { input_ids: ids, labels, prompt_tokens, response_tokens, truncated })
}

/// A template error while rendering `ex`, naming the record (file:line) it came from.
fn in_record(ex: &Example, e: Error) -> Error {
    match e {
        Error::Template { line, message } => Error::Template { line, message: format!("{}: {message}", ex.source) },
        other => other,
    }
}

fn unstable(ex: &Example) -> Error {
    Error::Template {
        line: None,
        message: format!("{}: rendering a longer conversation changed the earlier text, so prompt and response cannot be separated", ex.source),
    }
}

/// Shortens to `cutoff` keeping the response: the context before the last reply keeps at
/// least a quarter of the budget (or all of itself if shorter), the reply gets the rest up
/// to its whole length, and the context fills what is left — keeping its head (system
/// prompt) and its tail (the latest user turn and the assistant header).
fn fit(ids: Vec<u32>, labeled: Vec<bool>, reply_start: usize, cutoff: usize) -> (Vec<u32>, Vec<bool>, bool) {
    if ids.len() <= cutoff || cutoff == 0 {
        return (ids, labeled, false);
    }
    let (ctx_len, reply_len) = (reply_start, ids.len() - reply_start);
    let min_ctx = ctx_len.min(cutoff / 4);
    let reply_budget = reply_len.min(cutoff - min_ctx);
    let ctx_budget = (cutoff - reply_budget).min(ctx_len);
    let head = ctx_budget / 4;
    let tail = ctx_budget - head;
    let keep: Vec<usize> = (0..head).chain(ctx_len - tail..ctx_len).chain(reply_start..reply_start + reply_budget).collect();
    (keep.iter().map(|&i| ids[i]).collect(), keep.iter().map(|&i| labeled[i]).collect(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_response_and_the_context_edges() {
        let ids: Vec<u32> = (0..20).collect();
        let labeled: Vec<bool> = (0..20).map(|i| i >= 14).collect();
        let (out, lab, truncated) = fit(ids, labeled, 14, 10);
        assert!(truncated);
        assert_eq!(out.len(), 10);
        assert_eq!(&out[out.len() - 6..], &[14, 15, 16, 17, 18, 19], "whole response kept");
        assert_eq!(out[0], 0, "context head kept");
        assert_eq!(out[3], 13, "context tail kept");
        assert_eq!(lab.iter().filter(|&&l| l).count(), 6);
    }
}
