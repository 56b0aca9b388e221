//! A named set of f32 tensors under HF checkpoint names, with lookups that report the
//! missing tensor or the wrong shape by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Base-model weights keyed by HF name (`model.layers.0.self_attn.q_proj.weight`, …).
#[derive(Debug, Clone)]
pub struct Weights {
    source: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Wraps tensors read from `source` (used only in error messages).
    pub fn new(source: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Self { source: source.into(), tensors }
    }

    /// The file or directory the weights came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether a tensor named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::bad_model(&self.source, format!("missing tensor {name} (expected shape {shape:?})"))
        })?;
        if t.dims() != shape {
            return Err(Error::bad_model(
                &self.source,
                format!("tensor {name} has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        Ok(t.clone())
    }

    /// The tensor `name` if present (with the shape check), `None` if absent.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}
