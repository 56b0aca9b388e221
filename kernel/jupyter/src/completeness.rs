//! Whether a cell's Rust code is ready to run (`is_complete_request`): JupyterLab's console
//! and `jupyter console` run the code on Enter when the kernel says `complete`, and add a
//! new line (indented as the kernel suggests) when it says `incomplete`.
//!
//! The check is lexical, as IPython's is for Python: brackets `()[]{}` must balance outside
//! strings, character literals and comments. An unclosed bracket, string or block comment
//! is `incomplete`; a closing bracket that matches nothing is `invalid`. Type errors and
//! the like are left to the compiler when the cell runs.

/// The verdict on a piece of code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Ready to run.
    Complete,
    /// Needs more lines; the next line's suggested indent.
    Incomplete { indent: String },
    /// Cannot become valid by adding lines (a closing bracket that matches nothing).
    Invalid,
}

impl Completeness {
    /// The `is_complete_reply` content.
    pub fn reply(&self) -> serde_json::Value {
        match self {
            Self::Complete => serde_json::json!({"status": "complete"}),
            Self::Incomplete { indent } => serde_json::json!({"status": "incomplete", "indent": indent}),
            Self::Invalid => serde_json::json!({"status": "invalid"}),
        }
    }
}

/// Indent per open bracket.
const INDENT: &str = "    ";

/// Classifies `code` (see the module docs).
pub fn check(code: &str) -> Completeness {
    let chars: Vec<char> = code.chars().collect();
    let mut open: Vec<char> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => match block_comment_end(&chars, i) {
                Some(end) => i = end,
                None => return incomplete(open.len() + 1),
            },
            '"' => match string_end(&chars, i + 1) {
                Some(end) => i = end,
                None => return incomplete(open.len() + 1),
            },
            'r' | 'b' if !is_ident_char(i.checked_sub(1).map(|p| chars[p])) => {
                if let Some(start) = raw_string_start(&chars, i) {
                    match raw_string_end(&chars, start) {
                        Some(end) => i = end,
                        None => return incomplete(open.len() + 1),
                    }
                } else if c == 'b' && next == Some('"') {
                    match string_end(&chars, i + 2) {
                        Some(end) => i = end,
                        None => return incomplete(open.len() + 1),
                    }
                }
            }
            '\'' => i = char_literal_end(&chars, i).unwrap_or(i),
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(want) {
                    return Completeness::Invalid;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if open.is_empty() {
        Completeness::Complete
    } else {
        incomplete(open.len())
    }
}

fn incomplete(depth: usize) -> Completeness {
    Completeness::Incomplete { indent: INDENT.repeat(depth) }
}

fn is_ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Index of the `/` closing the (nested) block comment opened at `start`.
fn block_comment_end(chars: &[char], start: usize) -> Option<usize> {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Index of the `"` closing a string whose contents start at `from` (escapes skipped).
fn string_end(chars: &[char], from: usize) -> Option<usize> {
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// For `r"`, `r#"`, `br"`, `br#"` at `i`: the index of the opening `"`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if chars[j] == 'b' {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(j)
}

/// Index of the last `#` (or the `"`) closing the raw string whose `"` is at `quote`.
fn raw_string_end(chars: &[char], quote: usize) -> Option<usize> {
    let hashes = chars[..quote].iter().rev().take_while(|c| **c == '#').count();
    let mut i = quote + 1;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|h| chars.get(i + h) == Some(&'#')) {
            return Some(i + hashes);
        }
        i += 1;
    }
    None
}

/// The closing `'` of a character literal at `start`, or `None` for a lifetime or label.
fn char_literal_end(chars: &[char], start: usize) -> Option<usize> {
    match chars.get(start + 1)? {
        '\\' => (start + 3..chars.len().min(start + 12)).find(|&j| chars[j] == '\''),
        _ => (chars.get(start + 2) == Some(&'\'')).then_some(start + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: &str) -> Completeness {
        check(code)
    }

    #[test]
    fn statements_and_balanced_items_are_complete() {
        for code in [
            "let x = 1;",
            "",
            "fn f() { 1 }",
            "let s = \"{ not a brace\";",
            "let c = '{';",
            "fn f<'a>(x: &'a str) -> &'a str { x }",
            "// { comment\nlet x = 2;",
            "/* { /* nested */ } */ let y = 3;",
            "let r = r#\"raw \" { \"#;",
            "let b = b\"{\";",
            "let e = '\\'';",
            "println!(\"{}\", 1)",
        ] {
            assert_eq!(status(code), Completeness::Complete, "{code:?}");
        }
    }

    #[test]
    fn open_brackets_strings_and_comments_are_incomplete_with_an_indent() {
        assert_eq!(status("fn f() {"), Completeness::Incomplete { indent: "    ".into() });
        assert_eq!(status("fn f() {\n    if x {"), Completeness::Incomplete { indent: "        ".into() });
        assert_eq!(status("let v = vec![1,"), Completeness::Incomplete { indent: "    ".into() });
        assert!(matches!(status("let s = \"open"), Completeness::Incomplete { .. }));
        assert!(matches!(status("/* open"), Completeness::Incomplete { .. }));
        assert!(matches!(status("let r = r#\"open\" ;"), Completeness::Incomplete { .. }));
    }

    #[test]
    fn unmatched_closers_are_invalid() {
        assert_eq!(status("}"), Completeness::Invalid);
        assert_eq!(status("let x = (1];"), Completeness::Invalid);
        assert_eq!(status("fn f() { ) }"), Completeness::Invalid);
    }

    #[test]
    fn the_reply_follows_the_message_spec() {
        assert_eq!(check("let x = 1;").reply(), serde_json::json!({"status": "complete"}));
        assert_eq!(check("fn f() {").reply(), serde_json::json!({"status": "incomplete", "indent": "    "}));
        assert_eq!(check("}").reply(), serde_json::json!({"status": "invalid"}));
    }
}
