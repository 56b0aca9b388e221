//! One training example: a conversation plus where it came from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chat::{Message, Role};

/// Where a record lives: file, 1-based line (the line its JSON object or CSV row starts on),
/// the column when the line alone does not locate it, and its index in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceRef {
    /// The file the record was read from.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in characters) where the record starts; set only when another record
    /// starts on the same line (a minified JSON array), so `file:line` would be ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// 1-based position of the record in the file: what identifies it (lines can repeat).
    #[serde(default)]
    pub record: usize,
}

impl SourceRef {
    /// The `record`-th record of `file`, starting on `line`.
    pub fn new(file: impl Into<PathBuf>, line: usize, record: usize) -> Self {
        Self { file: file.into(), line, column: None, record }
    }

    /// `line`, or `line:column` when the column is needed to tell records apart.
    pub fn position(&self) -> String {
        match self.column {
            Some(column) => format!("{}:{column}", self.line),
            None => self.line.to_string(),
        }
    }
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.position())?;
        if self.column.is_some() {
            write!(f, " (record {})", self.record)?;
        }
        Ok(())
    }
}

/// A training conversation: optional system message, then user/assistant turns ending with
/// an assistant turn (the response the model learns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Where it was read from.
    pub source: SourceRef,
    /// The conversation.
    pub messages: Vec<Message>,
    /// The record's `id` field, if it had one.
    #[serde(default)]
    pub id: Option<String>,
    /// The record as read (all its fields), so splits and filters write it back unchanged.
    #[serde(skip)]
    pub record: serde_json::Map<String, serde_json::Value>,
}

impl Example {
    /// The turns before the final assistant turn (all of them when the conversation does
    /// not end with one, as a prompt-only record does): what a model is asked.
    pub fn prompt_messages(&self) -> &[Message] {
        match self.messages.last() {
            Some(m) if m.role == Role::Assistant => &self.messages[..self.messages.len() - 1],
            _ => &self.messages,
        }
    }

    /// [`Self::prompt_messages`] as plain text (system and user turns and earlier replies,
    /// one per line) — what identifies the task.
    pub fn prompt_text(&self) -> String {
        self.prompt_messages().iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// The final assistant turn's text.
    pub fn response_text(&self) -> &str {
        self.messages.last().filter(|m| m.role == Role::Assistant).map_or("", |m| m.content.as_str())
    }

    /// The whole conversation's text.
    pub fn full_text(&self) -> String {
        self.messages.iter().map(|m| format!("{}: {}", m.role.as_str(), m.content)).collect::<Vec<_>>().join("\n")
    }
}

/// Text normalised for near-duplicate and overlap detection: lower-case, every run of
/// non-alphanumeric characters collapsed to one space, trimmed.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_ignores_case_punctuation_and_spacing() {
        assert_eq!(normalize_text("  Hello,   World!! "), "hello world");
        assert_eq!(normalize_text("hello world"), normalize_text("HELLO\n\tworld."));
        assert_eq!(normalize_text("审查 代码。"), "审查 代码");
    }
}
