//! The live-display bridge. evcxr sends rich output only when a cell ends, so tunelab's
//! library prints one marker line per display update while the cell runs:
//!
//! `\u{1e}tunelab-display NONCE {"display_id": "...", "update": false, "data": {"text/html": "..."}}`
//!
//! The kernel's stdout reader turns such lines into `display_data` (first time) or
//! `update_display_data` (later) messages; every other line is ordinary stream output.
//! NONCE is this kernel's secret ([`crate::user_error::nonce`], passed to the library in the
//! code-running process as `TUNELAB_KERNEL_NONCE`), so text from a dataset or a model that
//! a cell prints cannot pass for a display line.

use serde::Deserialize;

/// The start of a display line: record separator, tag and this kernel's secret (the
/// library's `notebook::markers::display_marker` writes the same). Built once: the kernel
/// checks every stdout line against it.
pub fn marker() -> &'static str {
    static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARKER.get_or_init(|| format!("\u{1e}tunelab-display {} ", crate::user_error::nonce()))
}

/// One display update parsed from a marker line.
#[derive(Debug, Deserialize, PartialEq)]
pub struct DisplayLine {
    /// Stable id: later lines with the same id replace the output in place.
    pub display_id: String,
    /// Whether this updates an existing display.
    #[serde(default)]
    pub update: bool,
    /// MIME bundle.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// A request to clear the cell's output instead (`clear_output`), with its `wait` flag.
    #[serde(default)]
    pub clear: bool,
    /// `clear_output`'s `wait`: clear when the next output arrives.
    #[serde(default)]
    pub wait: bool,
}

/// Parses a stdout line: `Some` for a well-formed display line.
pub fn parse(line: &str) -> Option<DisplayLine> {
    serde_json::from_str(line.strip_prefix(marker())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_marker_lines_only() {
        let body = "{\"display_id\": \"t1\", \"update\": true, \"data\": {\"text/html\": \"<b>x</b>\"}}";
        let line = format!("{}{body}", marker());
        let d = parse(&line).unwrap();
        assert_eq!(d.display_id, "t1");
        assert!(d.update);
        assert_eq!(d.data["text/html"], "<b>x</b>");
        assert!(parse("plain output").is_none());
        assert!(parse(&format!("{}not json", marker())).is_none());
        // A line with the tag but not this kernel's secret is plain text.
        assert!(parse(&format!("\u{1e}tunelab-display guess {body}")).is_none());
        let clear = parse(&format!("{}{{\"clear\": true, \"wait\": true, \"display_id\": \"\", \"data\": {{}}}}", marker())).unwrap();
        assert!(clear.clear && clear.wait);
    }
}
