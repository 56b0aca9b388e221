//! Decoding options shared by `tunelab generate` and `tunelab eval run`.

use clap::Args;
use tunelab::GenerationConfig;

/// How answers are decoded (greedy unless a temperature is given).
#[derive(Debug, Clone, Args)]
pub struct DecodingArgs {
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy, the default).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Top-k filtering when sampling.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p (nucleus) filtering when sampling.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A string that ends generation (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl DecodingArgs {
    /// The library's decoding settings.
    pub fn config(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop_strings: self.stop.clone(),
        }
    }
}
