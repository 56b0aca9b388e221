//! The evaluation library's one error type. Every variant names what went wrong and where
//! (file and line, case id, endpoint), so a user can fix their input without reading the
//! code. The CLI adds its own context with `anyhow`; the library does not.

use std::path::PathBuf;

use tunelab::data::SourceRef;

/// Errors raised by the evaluation library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `creating`, `appending to` …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A suite file is malformed.
    #[error("suite {path}: {message}")]
    Suite {
        /// The suite file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A rubric file is malformed (errors name the check and field).
    #[error("rubric {}: {message}", path.as_ref().map_or_else(|| "<text>".to_string(), |p| p.display().to_string()))]
    Rubric {
        /// The rubric file (None for rubric text parsed in code).
        path: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// A file of records (cases, predictions, a generation cache) has an unusable entry.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Records {
        /// The file.
        path: PathBuf,
        /// The 1-based line, when one line is at fault.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Two cases share an id.
    #[error("duplicate case id `{id}` at {first} and {second}")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Where it first appears.
        first: Box<SourceRef>,
        /// Where it appears again.
        second: Box<SourceRef>,
    },
    /// Held-out cases appear in the training file.
    #[error("{count} held-out case(s) appear in the training file {train}: {examples}")]
    Leak {
        /// How many held-out cases leaked.
        count: usize,
        /// The training file.
        train: PathBuf,
        /// Some of them, with their places.
        examples: String,
    },
    /// Something failed for one case (its generation, its perplexity, its judge call).
    #[error("case {id}: {source}")]
    Case {
        /// The case id.
        id: String,
        /// The cause.
        source: Box<Error>,
    },
    /// An OpenAI-compatible endpoint failed or answered something unusable.
    #[error("{url}: {message}")]
    Endpoint {
        /// The URL requested.
        url: String,
        /// What happened (status and the server's message, or the connection error).
        message: String,
    },
    /// A model a scorer needs (the embedding model) could not be loaded or run.
    #[error("{path}: {message}")]
    ScorerModel {
        /// The model directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Some cases got no output; what finished is cached.
    #[error("{failed} of {total} case(s) got no output ({done} finished and cached; rerun the same command to resume):\n  {first}")]
    Incomplete {
        /// Cases without output.
        failed: usize,
        /// Cases in the run.
        total: usize,
        /// Cases with output.
        done: usize,
        /// The first errors, one per line.
        first: String,
    },
    /// The caller asked for something that cannot be done (no cases selected, a run that
    /// exists, a batch size out of range).
    #[error("{0}")]
    Invalid(String),
    /// A `run.json` is larger than any run record.
    #[error("{path} is {bytes} bytes, more than a run record can be ({limit})")]
    RecordTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The largest size read.
        limit: u64,
    },
    /// A `run.json` is not a run record of a known layout.
    #[error("{path} is not a tunelab run record: {source}")]
    RecordMalformed {
        /// The file.
        path: PathBuf,
        /// The parse error (with line and column).
        source: serde_json::Error,
    },
    /// A `run.json` written by a newer tunelab.
    #[error("{path} has schema_version {found}; this tunelab reads versions up to {supported} (upgrade tunelab to read it)")]
    RecordNewer {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Writing or reading results tables failed.
    #[error("{path}: {source}")]
    Table {
        /// The table file.
        path: PathBuf,
        /// The cause.
        source: polars::error::PolarsError,
    },
    /// A review study's database failed.
    #[error("{path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The model library failed (loading, templates, tokenizing, generating).
    #[error(transparent)]
    Kernel(#[from] tunelab::Error),
}

/// Result alias for the evaluation library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] while reading `path`.
    pub fn reading(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { action: "reading", path: path.into(), source }
    }

    /// An [`Error::Io`] while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { action, path: path.into(), source }
    }

    /// This error, attributed to case `id`.
    pub fn for_case(self, id: impl Into<String>) -> Self {
        Self::Case { id: id.into(), source: Box::new(self) }
    }

    /// An [`Error::Records`] at `line` of `path`.
    pub fn record_at(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Self::Records { path: path.into(), line: Some(line), message: message.into() }
    }
}
