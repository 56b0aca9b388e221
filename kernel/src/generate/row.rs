//! One sequence's output while it decodes: its token ids and text, its stop conditions,
//! and how much of the text has been streamed.

use super::{FinishReason, GenerationConfig};
use crate::error::Result;
use crate::model::Tokenizer;

/// Tracks one row's output: ids, stop conditions and what has been streamed.
pub(super) struct RowState {
    pub(super) ids: Vec<u32>,
    pub(super) text: String,
    emitted: usize,
    max_new: usize,
    pub(super) finish: Option<FinishReason>,
}

impl RowState {
    /// A row that may produce at most `max_new` tokens.
    pub(super) fn new(max_new: usize) -> Self {
        let finish = (max_new == 0).then_some(FinishReason::Length);
        Self { ids: Vec::new(), text: String::new(), emitted: 0, max_new, finish }
    }

    /// Accepts `id`; decodes and checks stop conditions. Returns newly streamable text.
    pub(super) fn push(&mut self, id: u32, tok: &Tokenizer, cfg: &GenerationConfig) -> Result<Option<String>> {
        if tok.stop_ids().contains(&id) {
            self.finish = Some(FinishReason::Stop);
            return Ok(self.flush());
        }
        self.ids.push(id);
        self.text = tok.decode(&self.ids, true)?;
        if let Some(cut) = cfg.stop_strings.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(cut);
            self.finish = Some(FinishReason::Stop);
            return Ok(self.flush());
        }
        if self.ids.len() >= self.max_new {
            self.finish = Some(FinishReason::Length);
            return Ok(self.flush());
        }
        // Hold back an incomplete UTF-8 sequence and any tail that may start a stop string.
        if self.text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let held = held_back_len(&self.text, &cfg.stop_strings);
        let end = self.text.len() - held;
        Ok(self.take_until(end))
    }

    fn flush(&mut self) -> Option<String> {
        let end = self.text.len();
        self.take_until(end)
    }

    fn take_until(&mut self, end: usize) -> Option<String> {
        if end <= self.emitted || !self.text.is_char_boundary(end) || !self.text.is_char_boundary(self.emitted) {
            return None;
        }
        let piece = self.text[self.emitted..end].to_string();
        self.emitted = end;
        Some(piece)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string.
fn held_back_len(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(move |&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_prefix_is_held_back() {
        let stops = vec!["###".to_string(), "END".to_string()];
        assert_eq!(held_back_len("hello #", &stops), 1);
        assert_eq!(held_back_len("hello ##", &stops), 2);
        assert_eq!(held_back_len("hello EN", &stops), 2);
        assert_eq!(held_back_len("hello", &stops), 0);
    }
}
