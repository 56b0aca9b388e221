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

/// Which weights generation reads (the command-line face of [`tunelab::DecodeWeights`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodeWeights {
    /// The f32 weights (exactly the training-time model). Decoding steps read a GGUF
    /// file's own Q4_1 / Q8_0 blocks where it has them: the same values, so the same tokens.
    F32,
    /// The f32 weights, read as f32 in every step (slower; for comparing with `f32`).
    #[value(name = "f32-dense")]
    F32Dense,
    /// An 8-bit (Q8_0) copy of every projection: about 3× fewer bytes per token.
    #[value(name = "q8_0")]
    Q8_0,
    /// A bf16 copy of every projection, multiplied with bf16 activations (AVX-512 BF16's
    /// dot-product instruction, f32 sums) in prompts and decoding steps: twice the
    /// multiply-adds per instruction for batches (evaluation suites); greedy tokens can
    /// differ from `f32`'s.
    Bf16,
    /// The model file's own blocks (Q8_0 where it has none) multiplied with activations
    /// rounded to 8 bits, in integer dot products (AVX-512 VNNI), as llama.cpp does: the
    /// fastest single stream; an adapter stays f32; greedy tokens can differ from `f32`'s.
    #[value(name = "int8-dot")]
    Int8Dot,
}

impl From<DecodeWeights> for tunelab::DecodeWeights {
    fn from(w: DecodeWeights) -> Self {
        match w {
            DecodeWeights::F32 => Self::F32,
            DecodeWeights::F32Dense => Self::F32Dense,
            DecodeWeights::Q8_0 => Self::Q8_0,
            DecodeWeights::Bf16 => Self::Bf16,
            DecodeWeights::Int8Dot => Self::Int8Dot,
        }
    }
}

impl DecodeWeights {
    /// `base`, with `adapter` when given, prepared for decoding with these weights.
    pub fn prepare(self, base: &tunelab::Transformer, adapter: Option<&tunelab::lora::AdapterSet>) -> tunelab::Result<tunelab::Transformer> {
        tunelab::DecodeWeights::from(self).prepare(base, adapter)
    }
}
