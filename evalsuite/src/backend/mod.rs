//! Backends turn cases into model outputs: a local model with zero or more LoRA adapters
//! ([`local`]), an OpenAI-compatible HTTP endpoint ([`http`]), or a file of predictions made
//! elsewhere ([`predictions`]).

pub mod http;
pub mod local;
pub mod predictions;

use serde::{Deserialize, Serialize};
use tunelab::GenerationConfig;

use crate::case::Case;
use crate::error::Result;
use crate::scorers::ReferenceModel;

/// One generated output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// The output text.
    pub text: String,
    /// Prompt tokens, when the backend reports them.
    pub prompt_tokens: Option<usize>,
    /// Generated tokens, when the backend reports them.
    pub completion_tokens: Option<usize>,
    /// Prompt tokens taken from a prefix cache instead of being computed (the local
    /// backend's shared prefixes, a server's `prompt_tokens_details.cached_tokens`), when
    /// the backend reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<usize>,
    /// Seconds from request to complete output (local generation: from the case's prefill
    /// to its last token, while sharing decoding steps with the other cases in flight).
    pub latency_s: f64,
    /// Why generation ended (stop, length, or the backend's word).
    pub finish: String,
}

/// What a run records about its backend (provenance and cache key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// local, http or predictions.
    pub kind: String,
    /// Model path, served model name, or predictions file.
    pub model: String,
    /// SHA-256 of the model file (local) or predictions file.
    pub model_sha256: Option<String>,
    /// Adapter directory, if any.
    pub adapter: Option<String>,
    /// SHA-256 over the adapter's files.
    pub adapter_sha256: Option<String>,
    /// Endpoint base URL (http).
    pub endpoint: Option<String>,
    /// The local backend's weights when they round (`bf16`, `q8_0`): outputs are then not
    /// the exact f32 model's. Absent for the exact weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// The local backend's device when it is not the CPU (`cuda:0`): a GPU's kernels round
    /// differently, so its outputs are not the CPU's bit for bit. Absent for the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Called as each case's output is ready: (index into the case list, result).
pub type OnGenerated<'a> = dyn FnMut(usize, Result<Generated>) + Send + 'a;

/// A source of outputs for cases.
pub trait Backend {
    /// Provenance.
    fn info(&self) -> &BackendInfo;

    /// Whether outputs depend on the decoding settings (and are worth caching).
    fn generates(&self) -> bool {
        true
    }

    /// Produces an output for each case, calling `done` as each finishes (in any order).
    /// An error for one case goes to `done`; an `Err` return stops the whole run.
    fn generate(&self, cases: &[&Case], decoding: &GenerationConfig, done: &mut OnGenerated<'_>) -> Result<()>;

    /// The evaluated model itself, where the backend holds it (the local backend), for
    /// scorers that read the model's probabilities (perplexity).
    fn reference_model(&self) -> Option<&dyn ReferenceModel> {
        None
    }
}
