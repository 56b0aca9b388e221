//! The live-display bridge. evcxr sends rich output only when a cell ends, so tunelab's
//! library prints one marker line per display update while the cell runs:
//!
//! `\u{1e}tunelab-display {"display_id": "...", "update": false, "data": {"text/html": "..."}}`
//!
//! The kernel's stdout reader turns such lines into `display_data` (first time) or
//! `update_display_data` (later) messages; every other line is ordinary stream output.

use serde::Deserialize;

/// The marker that starts a display line (ASCII record separator + tag).
pub const MARKER: &str = "\u{1e}tunelab-display ";

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
}

/// Parses a stdout line: `Some` for a well-formed display line.
pub fn parse(line: &str) -> Option<DisplayLine> {
    serde_json::from_str(line.strip_prefix(MARKER)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_marker_lines_only() {
        let line = format!("{MARKER}{{\"display_id\": \"t1\", \"update\": true, \"data\": {{\"text/html\": \"<b>x</b>\"}}}}");
        let d = parse(&line).unwrap();
        assert_eq!(d.display_id, "t1");
        assert!(d.update);
        assert_eq!(d.data["text/html"], "<b>x</b>");
        assert!(parse("plain output").is_none());
        assert!(parse(&format!("{MARKER}not json")).is_none());
    }
}
