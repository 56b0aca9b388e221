//! Reading dataset files: JSON arrays, JSON Lines and CSV, in UTF-8. Every record that
//! cannot be used becomes an [`Issue`] with its file, line and field — none is dropped
//! silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{value::RawValue, Map, Value};
use sha2::{Digest, Sha256};

use super::example::{Example, SourceRef};
use super::format::LoadOptions;
use super::validate::{Issue, Severity};
use crate::error::{Error, Result};

/// A loaded dataset: the usable examples and the problems found while reading.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file read.
    pub path: PathBuf,
    /// Usable examples, in file order.
    pub examples: Vec<Example>,
    /// Records that could not be read or converted (errors), in file order.
    pub issues: Vec<Issue>,
    /// SHA-256 of the file's bytes, for provenance.
    pub sha256: String,
}

impl Dataset {
    /// Loads `path` with the default options (format detected per record).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads `path` as JSON array (`.json`), JSON Lines (`.jsonl`, `.ndjson`) or CSV (`.csv`);
    /// other extensions are sniffed (`[` → array, else JSON Lines).
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        Self::from_bytes(path, &crate::fsutil::read_input(path)?, opts)
    }

    /// Reads a dataset from `bytes` already in memory, as [`Self::load_with`] reads the file
    /// `path` (whose name decides the format and appears in every issue).
    pub fn from_bytes(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let text = crate::fsutil::decode_utf8(path, bytes)?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let records = match ext.as_str() {
            "csv" => read_csv(path, text)?,
            "jsonl" | "ndjson" => read_jsonl(path, text),
            "json" => read_json_array(path, text)?,
            _ if text.trim_start().starts_with('[') => read_json_array(path, text)?,
            _ => read_jsonl(path, text),
        };
        let mut examples = Vec::new();
        let mut issues = Vec::new();
        for record in records {
            match record {
                Ok((obj, source)) => match opts.convert(&obj, source.clone()) {
                    Ok(ex) => examples.push(ex),
                    Err((field, message)) => issues.push(Issue::new(Severity::Error, source, field, message)),
                },
                Err(issue) => issues.push(issue),
            }
        }
        Ok(Self { path: path.to_path_buf(), examples, issues, sha256 })
    }

    /// Number of usable examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no usable examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// A dataset of `examples` (for splits and filtered copies), keeping the source path.
    pub fn with_examples(&self, examples: Vec<Example>) -> Self {
        Self { path: self.path.clone(), examples, issues: Vec::new(), sha256: self.sha256.clone() }
    }

    /// Writes the examples' original records as JSON Lines (atomically).
    pub fn save_jsonl(&self, path: &Path) -> Result<()> {
        let mut out = String::new();
        for ex in &self.examples {
            out.push_str(&serde_json::to_string(&ex.record).expect("JSON values serialise"));
            out.push('\n');
        }
        crate::fsutil::write_atomic(path, out.as_bytes())
    }
}

type Record = std::result::Result<(Map<String, Value>, SourceRef), Issue>;

fn object_or_issue(value: Value, src: SourceRef) -> Record {
    match value {
        Value::Object(obj) => Ok((obj, src)),
        other => Err(Issue::new(Severity::Error, src, None, format!("expected a JSON object, found {}", json_kind(&other)))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Object(_) => "an object",
    }
}

fn read_jsonl(path: &Path, text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let src = SourceRef::new(path, i + 1, out.len() + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(object_or_issue(v, src)),
            Err(e) => out.push(Err(Issue::new(Severity::Error, src, None, format!("invalid JSON at column {}: {e}", e.column())))),
        }
    }
    out
}

fn read_json_array(path: &Path, text: &str) -> Result<Vec<Record>> {
    let items: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("{}:{}:{}: invalid JSON: {e} (expected an array of records)", path.display(), e.line(), e.column())))?;
    let sources = array_item_sources(path, text, &items);
    Ok(items
        .into_iter()
        .zip(sources)
        .map(|(raw, src)| match serde_json::from_str::<Value>(raw.get()) {
            Ok(v) => object_or_issue(v, src),
            Err(e) => Err(Issue::new(Severity::Error, src, None, format!("invalid JSON: {e}"))),
        })
        .collect())
}

/// Where each item of a JSON array starts, found from the raw slices' offsets into `text`
/// in one pass (offsets increase); the column is kept only for lines holding several items.
fn array_item_sources(path: &Path, text: &str, items: &[&RawValue]) -> Vec<SourceRef> {
    let base = text.as_ptr() as usize;
    // `column` is the 1-based column of `scanned`, counted on from the previous item (a
    // minified file is one line: counting from the line's start each time is quadratic).
    let (mut line, mut scanned, mut column) = (1, 0, 1);
    let mut sources: Vec<SourceRef> = Vec::with_capacity(items.len());
    let mut columns = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let offset = raw.get().as_ptr() as usize - base;
        let mut counted_from = scanned;
        for (pos, _) in text[scanned..offset].match_indices('\n') {
            line += 1;
            (counted_from, column) = (scanned + pos + 1, 1);
        }
        column += text[counted_from..offset].chars().count();
        scanned = offset;
        columns.push(column);
        sources.push(SourceRef::new(path, line, i + 1));
    }
    let mut per_line: HashMap<usize, usize> = HashMap::new();
    for s in &sources {
        *per_line.entry(s.line).or_default() += 1;
    }
    for (s, column) in sources.iter_mut().zip(columns) {
        if per_line[&s.line] > 1 {
            s.column = Some(column);
        }
    }
    sources
}

fn read_csv(path: &Path, text: &str) -> Result<Vec<Record>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| Error::InvalidArgument(format!("{}:1: cannot read the CSV header: {e}", path.display())))?.clone();
    let mut out = Vec::new();
    for record in reader.records() {
        match record {
            Ok(row) => {
                let line = row.position().map_or(0, |p| p.line() as usize);
                let obj: Map<String, Value> = headers.iter().zip(row.iter()).map(|(h, v)| (h.to_string(), Value::String(v.to_string()))).collect();
                let src = SourceRef::new(path, line, out.len() + 1);
                out.push(Ok((obj, src)));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                let src = SourceRef::new(path, line, out.len() + 1);
                out.push(Err(Issue::new(Severity::Error, src, None, format!("bad CSV row: {e}"))));
            }
        }
    }
    Ok(out)
}
