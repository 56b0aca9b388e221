//! Finding model files: an explicit path, then `$TUNELAB_MODELS`, then `./models` (and
//! `models/` in the parent directories).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The model every machine has after `scripts/fetch-models`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Resolves `path`: as given if it exists, else relative to `$TUNELAB_MODELS`, else
/// relative to `./models`. The error lists every place tried and how to fetch models.
pub fn resolve_model_path(path: &Path) -> Result<PathBuf> {
    let mut tried = vec![path.to_path_buf()];
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if path.is_relative() {
        let name = path.file_name().map(PathBuf::from).unwrap_or_else(|| path.to_path_buf());
        let mut roots = Vec::new();
        if let Some(dir) = std::env::var_os("TUNELAB_MODELS") {
            roots.push(PathBuf::from(dir));
        }
        // ./models, then models/ in each parent directory (running from inside a project).
        if let Ok(cwd) = std::env::current_dir() {
            roots.extend(cwd.ancestors().map(|d| d.join("models")));
        } else {
            roots.push(PathBuf::from("models"));
        }
        for root in roots {
            for candidate in [root.join(path), root.join(&name)] {
                if candidate.exists() {
                    return Ok(candidate);
                }
                tried.push(candidate);
            }
        }
    }
    tried.dedup();
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Error::ModelNotFound { path: path.to_path_buf(), hint: format!("looked in {}; run scripts/fetch-models to download the models", tried.join(", ")) })
}
