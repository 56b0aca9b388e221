//! Keeping text from datasets and models out of the notebook's control channel. evcxr
//! reads the code-running process's stdout for control lines (`EVCXR_BEGIN_CONTENT mime`
//! anywhere in a line starts raw rich output, `EVCXR_END_CONTENT` ends it, and a few
//! `EVCXR_…` words end or fail a cell), and the tunelab kernel reads its live-display
//! lines there too. Every text the library prints goes through one of these functions
//! first, so a dataset record or a model's reply cannot inject HTML or end a cell; and the
//! live-display marker carries the kernel's per-process secret, which no data can know.

/// The environment variable through which the kernel passes its per-process secret to the
/// code-running process (the kernel's `bridge.rs` reads the same variable).
pub const NONCE_ENV: &str = "TUNELAB_KERNEL_NONCE";

/// The prefix evcxr's control words share.
const CONTROL_PREFIX: &str = "EVCXR_";

/// The start of a live-display line: record separator, tag and the kernel's secret.
pub fn display_marker() -> String {
    format!("\u{1e}tunelab-display {} ", std::env::var(NONCE_ENV).unwrap_or_default())
}

/// Plain text made inert: evcxr's control words get a zero-width space after `EVCXR` (shown
/// the same), and record separators (the live-display marker's first character) become
/// the visible symbol ␞.
#[inline]
pub fn neutralize_text(text: &str) -> String {
    text.replace(CONTROL_PREFIX, "EVCXR\u{200b}_").replace('\u{1e}', "\u{241e}")
}

/// HTML made inert: evcxr's control words get an entity for `_` (rendered identically), and
/// record separators become `&#x241e;`.
pub fn neutralize_html(html: &str) -> String {
    html.replace(CONTROL_PREFIX, "EVCXR&#95;").replace('\u{1e}', "&#x241e;")
}

/// A serialized JSON line made inert: `_` of evcxr's control words is written as the
/// escape `\u005f`, which parses back to the same string (serde_json already escapes
/// control characters such as the record separator).
pub fn neutralize_json(json: &str) -> String {
    json.replace(CONTROL_PREFIX, "EVCXR\\u005f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_words_and_markers_do_not_survive() {
        let hostile = "ok\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/html\n<script>x</script>\n\u{1e}tunelab-display {}";
        for out in [neutralize_text(hostile), neutralize_html(hostile)] {
            assert!(!out.contains("EVCXR_") && !out.contains('\u{1e}'), "{out}");
        }
        let json = serde_json::json!({"text/plain": hostile}).to_string();
        let safe = neutralize_json(&json);
        assert!(!safe.contains("EVCXR_") && !safe.contains('\u{1e}'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["text/plain"], hostile);
    }
}
