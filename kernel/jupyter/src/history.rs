//! The cells this kernel ran, for `history_request` (`tail`, `range` and `search`, as
//! IPython answers them): front ends use it for up-arrow recall and `%history`-like views.
//! Kept in memory for the kernel's lifetime, as one session numbered [`SESSION`].
//!
//! Requests arrive with the spec's optional fields filled in (`wire::fill_optional_fields`):
//! a `search` without `n` asks for every match.

use serde_json::{json, Value};

/// The session number history entries carry (one per kernel process).
pub const SESSION: u64 = 1;

/// Most cells kept (the oldest are dropped first).
const MAX_CELLS: usize = 10_000;

/// One executed cell.
#[derive(Debug, Clone)]
struct Cell {
    line: u64,
    input: String,
    output: Option<String>,
}

/// Executed cells in order.
#[derive(Debug, Default)]
pub struct History {
    cells: Vec<Cell>,
}

impl History {
    /// Records cell number `line` with its code and its `text/plain` result, if any.
    pub fn record(&mut self, line: u64, input: &str, output: Option<&str>) {
        if self.cells.len() == MAX_CELLS {
            self.cells.remove(0);
        }
        self.cells.push(Cell { line, input: input.to_string(), output: output.map(str::to_string) });
    }

    /// The `history_reply` content for a request's content.
    pub fn reply(&self, request: &Value) -> Value {
        let with_output = request["output"].as_bool().unwrap_or(false);
        let n = request["n"].as_u64().map(|n| n as usize);
        let cells: Vec<&Cell> = match request["hist_access_type"].as_str().unwrap_or("tail") {
            "tail" => last(self.cells.iter().collect(), n.unwrap_or(10)),
            "range" => self.range(request),
            "search" => {
                let pattern = request["pattern"].as_str().unwrap_or("*");
                let mut found: Vec<&Cell> = self.cells.iter().filter(|c| glob_match(pattern, &c.input)).collect();
                if request["unique"].as_bool().unwrap_or(false) {
                    // Keep each input's latest run, in order.
                    let mut seen = std::collections::HashSet::new();
                    found = found.into_iter().rev().filter(|c| seen.insert(c.input.as_str())).collect();
                    found.reverse();
                }
                match n {
                    Some(n) => last(found, n),
                    None => found,
                }
            }
            _ => Vec::new(),
        };
        // A cell without a value has output "" (IPython sends null; the protocol crate's
        // typed reply takes strings only, and would drop the whole reply).
        let entry = |c: &Cell| match with_output {
            true => json!([SESSION, c.line, [c.input, c.output.as_deref().unwrap_or("")]]),
            false => json!([SESSION, c.line, c.input]),
        };
        let entries: Vec<Value> = cells.into_iter().map(entry).collect();
        json!({"status": "ok", "history": entries})
    }

    /// Cells `start..stop` of this session (`session` 0 or negative means the current one,
    /// as in IPython; `stop` absent means to the end).
    fn range(&self, request: &Value) -> Vec<&Cell> {
        let session = request["session"].as_i64().unwrap_or(0);
        if session > 0 && session as u64 != SESSION {
            return Vec::new();
        }
        let start = request["start"].as_u64().unwrap_or(0);
        let stop = request["stop"].as_u64().unwrap_or(u64::MAX);
        self.cells.iter().filter(|c| c.line >= start && c.line < stop).collect()
    }
}

fn last(cells: Vec<&Cell>, n: usize) -> Vec<&Cell> {
    let skip = cells.len().saturating_sub(n);
    cells.into_iter().skip(skip).collect()
}

/// Shell-style glob: `*` any run of characters, `?` one character, the rest literal.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut h = History::default();
        h.record(1, "let x = 1;", None);
        h.record(2, "x + 1", Some("2"));
        h.record(3, "x + 1", Some("2"));
        h.record(4, "println!(\"hi\")", None);
        h
    }

    fn inputs(reply: &Value) -> Vec<String> {
        reply["history"].as_array().unwrap().iter().map(|e| e[2].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn tail_gives_the_last_n_cells_in_order() {
        let r = history().reply(&json!({"hist_access_type": "tail", "n": 2, "output": false, "raw": true}));
        assert_eq!(inputs(&r), ["x + 1", "println!(\"hi\")"]);
        assert_eq!(r["history"][0][0], SESSION);
        assert_eq!(r["history"][0][1], 3);
        let with_output = history().reply(&json!({"hist_access_type": "tail", "n": 1, "output": true}));
        assert_eq!(with_output["history"][0][2], json!(["println!(\"hi\")", ""]));
    }

    #[test]
    fn range_selects_lines_of_this_session() {
        let r = history().reply(&json!({"hist_access_type": "range", "session": SESSION, "start": 2, "stop": 3}));
        assert_eq!(inputs(&r), ["x + 1"]);
        assert_eq!(r["history"][0][1], 2);
        assert!(history().reply(&json!({"hist_access_type": "range", "session": 7, "start": 0}))["history"].as_array().unwrap().is_empty());
    }

    #[test]
    fn search_matches_globs_with_unique_and_n() {
        let h = history();
        assert_eq!(inputs(&h.reply(&json!({"hist_access_type": "search", "pattern": "x*"}))), ["x + 1", "x + 1"]);
        assert_eq!(inputs(&h.reply(&json!({"hist_access_type": "search", "pattern": "x*", "unique": true}))), ["x + 1"]);
        assert_eq!(inputs(&h.reply(&json!({"hist_access_type": "search", "pattern": "*", "n": 3}))).len(), 3);
        assert!(glob_match("pr?ntln*", "println!(1)") && !glob_match("let", "let x"));
    }
}
