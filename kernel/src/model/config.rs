//! Hyper-parameters of a llama-family transformer, read from GGUF metadata or an HF
//! `config.json`, in one shape the transformer consumes.

use serde::{Deserialize, Serialize};

/// Which member of the llama family a checkpoint is; they differ in small switches only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama / SmolLM / Mistral-style: no projection biases.
    Llama,
    /// Qwen2: biases on the q, k and v projections.
    Qwen2,
}

impl Architecture {
    /// Parses an architecture name as GGUF (`llama`, `qwen2`) or HF (`LlamaForCausalLM`,
    /// `Qwen2ForCausalLM`, `model_type`) spell it.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" | "mistral" | "mistralforcausallm" => Some(Self::Llama),
            "qwen2" | "qwen2forcausallm" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// Whether q/k/v projections carry a bias.
    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }

    /// The name HF uses for `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// The hyper-parameters a transformer needs, HF `config.json` field names where they exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model family.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Rotary embedding base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output projection shares the token embedding matrix.
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// A tiny configuration of `architecture` (hidden 16, two layers, four heads over two
    /// key/value heads, vocabulary 11, 32 positions) for tests and examples, with
    /// [`super::Weights::random`] as its weights.
    pub fn tiny(architecture: Architecture) -> Self {
        Self {
            architecture,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            vocab_size: 11,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 32,
            tie_word_embeddings: true,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks internal consistency (divisibility of heads), returning what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return Err("head counts must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!("num_attention_heads {} is not a multiple of num_key_value_heads {}", self.num_attention_heads, self.num_key_value_heads));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta is {}; RoPE needs a positive base frequency", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!("rms_norm_eps is {}; it must be a small positive number", self.rms_norm_eps));
        }
        if self.max_position_embeddings == 0 || self.max_position_embeddings > MAX_POSITIONS {
            return Err(format!(
                "max_position_embeddings {} is outside 1..={MAX_POSITIONS} (the rotary tables hold every position)",
                self.max_position_embeddings
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head dimension {} is odd; rotary embedding needs it even", self.head_dim()));
        }
        Ok(())
    }
}

/// The longest context a model may declare: its rotary tables are built for every
/// position (16 Mi positions, past every released model's context).
pub const MAX_POSITIONS: usize = 1 << 24;

/// The subset of an HF `config.json` tunelab reads.
#[derive(Debug, Deserialize)]
pub(crate) struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// RoPE scaling (Llama 3.1's, YaRN …): not applied by tunelab, so refused when set.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}
