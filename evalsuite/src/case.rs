//! The evaluation case: the bottom of the evaluation vocabulary. A case knows its prompt,
//! its reference answer and its metadata; it knows nothing of rubrics or scorers (the suite
//! decides which rubric scores which cases).

use std::collections::BTreeMap;

use tunelab::data::{Example, SourceRef};
use tunelab::{Message, Role};

/// One evaluation case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable id (the record's `id`, else `<file stem>-<line>`).
    pub id: String,
    /// seen, heldout, ood, guard or a custom category.
    pub category: String,
    /// The conversation up to (not including) the reference answer, system prompt included.
    pub messages: Vec<Message>,
    /// The reference answer (the record's output / final assistant turn).
    pub reference: String,
    /// Free labels from the record.
    pub tags: Vec<String>,
    /// Terms for the `keywords` scorer.
    pub keywords: Vec<String>,
    /// The record's other string fields (e.g. `input`, the code of a security task), which
    /// scorers may name (`location_line` reads `input` by default).
    pub fields: BTreeMap<String, String>,
    /// Where the case was read from.
    pub source: SourceRef,
}

impl Case {
    /// A single-turn case built in code (notebooks, benchmarks): `prompt` as the user turn,
    /// `reference` as the expected answer.
    pub fn new(id: impl Into<String>, category: impl Into<String>, prompt: impl Into<String>, reference: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            category: category.into(),
            messages: vec![Message::user(prompt.into())],
            reference: reference.into(),
            tags: Vec::new(),
            keywords: Vec::new(),
            fields: BTreeMap::new(),
            source: SourceRef::new("<code>", 0, 0),
        }
    }

    /// The prompt as plain text (the user turns joined), for reports and matching.
    pub fn prompt_text(&self) -> String {
        self.messages.iter().filter(|m| m.role != Role::System).map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// A named string field of the record (`""` when absent).
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// The case as a training example (prompt + reference answer), for perplexity.
    pub fn example(&self) -> Example {
        let mut messages = self.messages.clone();
        messages.push(Message::assistant(self.reference.clone()));
        Example { source: self.source.clone(), messages, id: Some(self.id.clone()), record: Default::default() }
    }
}
