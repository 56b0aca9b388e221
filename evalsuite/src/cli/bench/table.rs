//! The table every benchmark prints: a header with machine and date, then one row per
//! configuration, as Markdown so it can be pasted into BENCHMARKS.md.

/// Rows of text cells under named columns.
pub struct Table {
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row (missing cells print as `–`).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table with the machine and date.
    pub fn print(&self) {
        println!("\n## {}\n", self.title);
        println!("machine: {}; date: {}\n", super::machine::describe(), super::machine::today());
        println!("| {} |", self.columns.join(" | "));
        println!("|{}", "---|".repeat(self.columns.len()));
        for r in &self.rows {
            let cells: Vec<&str> = (0..self.columns.len()).map(|i| r.get(i).map_or("–", String::as_str)).collect();
            println!("| {} |", cells.join(" | "));
        }
    }
}

/// A number with `digits` decimals, or `–`.
pub fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// `a / b` as `0.00×`, or `–`.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}
