//! A run's data, made ready: validated (invalid records refused unless the caller asked to
//! skip them — never dropped silently) and tokenized through the model's chat template.

use super::config::TrainConfig;
use crate::data::{encode_example, Dataset, Encoded, Severity, ValidationOptions, ValidationReport};
use crate::error::{Error, Result};
use crate::model::Model;

/// The tokenized examples of a run and what validation found.
pub(crate) struct Prepared {
    /// The validation report of the training (and held-out) data.
    pub report: ValidationReport,
    /// Invalid training records dropped (with `skip_invalid`).
    pub skipped: usize,
    /// The training examples kept, tokenized.
    pub train: Vec<Encoded>,
    /// The held-out examples, tokenized (empty without held-out data).
    pub eval: Vec<Encoded>,
    /// Token count of each training example.
    pub lengths: Vec<usize>,
}

impl Prepared {
    /// Token count of the longest training example.
    pub fn longest(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
}

/// Validates and tokenizes `train` (and `eval`) for `model` under `cfg`.
pub(crate) fn prepare(cfg: &TrainConfig, model: &Model, train: &Dataset, eval: Option<&Dataset>) -> Result<Prepared> {
    let (tok, template) = (&model.tokenizer, &model.template);
    let report = ValidationReport::build(train, eval, None, &ValidationOptions { cutoff_len: cfg.cutoff_len, ..Default::default() })?;
    let bad_records = report.error_records();
    if !bad_records.is_empty() && !cfg.skip_invalid {
        let first = report.issues.iter().find(|i| i.severity == Severity::Error).map(|i| i.to_string()).unwrap_or_default();
        return Err(Error::DatasetInvalid { path: train.path.clone(), errors: report.error_count(), first });
    }
    let kept: Vec<_> = train.examples.iter().filter(|e| !bad_records.contains(&e.source.record)).collect();
    let skipped = report.records - kept.len();
    if kept.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: no usable examples", train.path.display())));
    }
    let opts = cfg.encode_options();
    let encoded: Vec<Encoded> = kept.iter().map(|e| encode_example(e, template, tok, &opts)).collect::<Result<_>>()?;
    let eval_encoded: Vec<Encoded> = match eval {
        Some(ev) => {
            // Unreadable held-out records are refused like training ones, never dropped
            // silently (the held-out loss would be measured on what is left).
            if let (Some(first), false) = (ev.issues.first(), cfg.skip_invalid) {
                return Err(Error::DatasetInvalid { path: ev.path.clone(), errors: ev.issues.len(), first: first.to_string() });
            }
            if ev.examples.is_empty() {
                return Err(Error::InvalidArgument(format!("{}: no usable held-out examples", ev.path.display())));
            }
            ev.examples.iter().map(|e| encode_example(e, template, tok, &opts)).collect::<Result<_>>()?
        }
        None => Vec::new(),
    };
    let lengths = encoded.iter().map(|e| e.input_ids.len()).collect();
    Ok(Prepared { report, skipped, train: encoded, eval: eval_encoded, lengths })
}
