//! Datasets: loading Alpaca / ShareGPT / OpenAI-messages files (JSON, JSONL, CSV) into
//! conversations, validating them, splitting them, and turning them into token ids with
//! response-only labels and length-grouped batches.

mod batch;
mod example;
mod format;
mod load;
mod split;
mod tokenize;
mod validate;

pub use batch::{Batch, BatchPlan};
pub use example::{normalize_text, Example, SourceRef};
pub use format::{Columns, DatasetFormat, LoadOptions};
pub use load::Dataset;
pub use split::SplitSpec;
pub use tokenize::{encode_example, EncodeOptions, Encoded, IGNORE_INDEX};
pub use validate::{Issue, LengthStats, Severity, ValidationOptions, ValidationReport};
