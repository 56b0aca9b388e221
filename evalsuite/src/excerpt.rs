//! Short excerpts of untrusted text for messages and report details.

/// The first `n` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
