//! The library's error type: every variant names what went wrong and where (file, tensor,
//! field, line), so a user can fix their input without reading the code.

use std::path::PathBuf;

/// Errors raised by tunelab's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file or directory could not be found.
    #[error("model not found: {path} ({hint})")]
    ModelNotFound {
        /// The path that was looked up.
        path: PathBuf,
        /// What the user can do about it.
        hint: String,
    },
    /// Reading or writing a file failed (the I/O error says how).
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An input file is larger than the input limit (or never ends: a device, a pipe).
    #[error("{path}: more than {} MiB, the input limit (a file this large, or one that never ends, such as a device or pipe, is not read); raise the limit with --max-input-mb or TUNELAB_MAX_INPUT_MB", limit.div_ceil(1 << 20))]
    InputTooLarge {
        /// The file being read.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A model file is malformed: truncated, missing tensors, wrong shapes, bad metadata.
    #[error("{path}: {message}")]
    BadModel {
        /// The model file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The model's architecture is not one tunelab can run.
    #[error("{path}: unsupported architecture {arch:?} (tunelab runs llama and qwen2)")]
    UnsupportedArchitecture {
        /// The model file or directory.
        path: PathBuf,
        /// The architecture it declares.
        arch: String,
    },
    /// A tokenizer could not be built or failed to encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to compile or render.
    #[error("chat template{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        /// Line in the template source, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
    /// Invalid settings passed by the caller (generation options, shapes of inputs).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A dataset has errors and the caller did not ask to skip invalid records.
    #[error(
        "{path}: {errors} invalid record(s), first: {first}\n(run `tunelab data check {path}` for all of them, or train with --skip-invalid to drop them)"
    )]
    DatasetInvalid {
        /// The dataset file.
        path: PathBuf,
        /// Number of errors.
        errors: usize,
        /// The first error, located.
        first: String,
    },
    /// Training produced a non-finite loss or gradient.
    #[error("training diverged at step {step}: {message}{}", checkpoint.as_ref().map(|c| format!("; the last good state is saved in {}", c.display())).unwrap_or_default())]
    TrainingDiverged {
        /// The optimiser step (1-based) that failed.
        step: usize,
        /// What was not finite.
        message: String,
        /// Checkpoint holding the last good state.
        checkpoint: Option<PathBuf>,
    },
    /// Training would need more memory than the machine has available.
    #[error("training needs about {needed_mib} MiB beyond the loaded model but {available_mib} MiB are available or allowed on {device} (batch size {batch_size}, longest sequence {longest} tokens, cutoff {cutoff}); lower --batch-size or --cutoff, or pass --low-memory to recompute activations layer by layer")]
    InsufficientMemory {
        /// Estimated bytes needed, in MiB.
        needed_mib: u64,
        /// Bytes available, in MiB.
        available_mib: u64,
        /// Where: `cpu` or `cuda:N`.
        device: String,
        /// Examples per micro-batch.
        batch_size: usize,
        /// Longest tokenized example.
        longest: usize,
        /// Cutoff length in tokens.
        cutoff: usize,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for tunelab's library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::BadModel`] for `path`.
    pub fn bad_model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadModel { path: path.into(), message: message.into() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
