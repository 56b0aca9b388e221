//! Identity leaks: an answer that names the model, adapter or run that wrote it would unblind
//! the reviewer, so such items are left out of a study (as Chatbot Arena drops battles whose
//! text reveals a model name).

/// Identity words to look for: each run's name, its adapter directory's name, its model
/// file's stem and that stem's first part (`SmolLM2` of `SmolLM2-135M-Instruct.Q4_1`), plus
/// words the user adds. Words shorter than three characters are ignored (they would match
/// everywhere).
pub fn identity_words(run_names: &[String], models: &[String], adapters: &[String], extra: &[String]) -> Vec<String> {
    let stem = |path: &str| -> String {
        let name = path.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next().unwrap_or(path).to_string();
        name.strip_suffix(".gguf").map(str::to_string).unwrap_or(name)
    };
    let mut words: Vec<String> = Vec::new();
    words.extend(run_names.iter().cloned());
    words.extend(adapters.iter().map(|a| stem(a)));
    for m in models {
        let s = stem(m);
        if let Some(first) = s.split(['-', '.', '_']).next() {
            words.push(first.to_string());
        }
        words.push(s);
    }
    words.extend(extra.iter().cloned());
    let mut words: Vec<String> = words.into_iter().map(|w| w.trim().to_lowercase()).filter(|w| w.chars().count() >= 3).collect();
    words.sort();
    words.dedup();
    words
}

/// The first identity word `text` mentions as a whole word (case-insensitive), if any.
pub fn mentioned_identity<'w>(text: &str, words: &'w [String]) -> Option<&'w str> {
    let lower = text.to_lowercase();
    let is_word_char = |c: char| c.is_alphanumeric() || c == '_';
    words.iter().map(String::as_str).find(|w| {
        lower.match_indices(w).any(|(at, _)| {
            let before = lower[..at].chars().next_back();
            let after = lower[at + w.len()..].chars().next();
            !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_runs_models_and_adapters_are_found_as_whole_words() {
        let words = identity_words(
            &["base".into(), "demo-adapter".into()],
            &["models/SmolLM2-135M-Instruct.Q4_1.gguf".into()],
            &["out/adapter-v3/".into()],
            &["Acme".into(), "x".into()],
        );
        assert_eq!(words, ["acme", "adapter-v3", "base", "demo-adapter", "smollm2", "smollm2-135m-instruct.q4_1"]);
        assert_eq!(mentioned_identity("I am SmolLM2, a helpful assistant.", &words), Some("smollm2"));
        assert_eq!(mentioned_identity("Trained as demo-adapter.", &words), Some("demo-adapter"));
        assert_eq!(mentioned_identity("The database is the basis.", &words), None, "parts of words do not count");
        assert_eq!(mentioned_identity("ACME corp", &words), Some("acme"));
    }
}
