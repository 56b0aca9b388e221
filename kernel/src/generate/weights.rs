//! Which weights generation reads: the exact f32 model (the default) or a faster copy that
//! rounds.

use candle_core::quantized::GgmlDType;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lora::AdapterSet;
use crate::model::Transformer;

/// The weights prompt and decoding passes read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeWeights {
    /// The f32 weights, exactly the training-time model. Decoding reads a GGUF file's own
    /// Q4_1 / Q8_0 blocks where it has them: the same values, so the same tokens.
    #[default]
    F32,
    /// The f32 weights read as f32 in every step (slower; for comparing with `F32`).
    F32Dense,
    /// An 8-bit (Q8_0) copy of every projection for decoding steps: about 3× fewer bytes per
    /// token than f32; tokens can differ.
    Q8_0,
    /// A bf16 copy of every projection, multiplied with bf16-rounded activations and summed
    /// in f32, for prompts and decoding steps: about twice the multiply-adds per instruction
    /// on CPUs with AVX-512 BF16 (batched decoding, evaluation suites); tokens can differ.
    Bf16,
    /// The model file's own blocks (Q8_0 where it has none) multiplied with activations
    /// rounded to 8 bits per block of 32, in integer dot products, as llama.cpp does, for
    /// decoding steps and short prompts; an adapter stays f32. Tokens can differ.
    Int8Dot,
}

impl DecodeWeights {
    /// Whether the model's tokens are exactly the f32 model's.
    pub fn is_exact(self) -> bool {
        matches!(self, Self::F32 | Self::F32Dense)
    }

    /// The name used on command lines and in run records.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F32Dense => "f32-dense",
            Self::Q8_0 => "q8_0",
            Self::Bf16 => "bf16",
            Self::Int8Dot => "int8-dot",
        }
    }

    /// `base`, with `adapter` when given, prepared for generation with these weights (an
    /// adapter is attached to the exact path and folded into the weights of the others).
    pub fn prepare(self, base: &Transformer, adapter: Option<&AdapterSet>) -> Result<Transformer> {
        match (self, adapter) {
            (Self::F32, None) => Ok(base.clone()),
            (Self::F32, Some(a)) => a.for_inference(base),
            (Self::F32Dense, None) => Ok(base.without_packed_weights()),
            (Self::F32Dense, Some(a)) => a.merged(base),
            (Self::Q8_0, None) => base.quantized_for_decoding(GgmlDType::Q8_0),
            (Self::Q8_0, Some(a)) => a.merged(base)?.quantized_for_decoding(GgmlDType::Q8_0),
            (Self::Bf16, None) => base.bf16_for_decoding(),
            (Self::Bf16, Some(a)) => a.merged(base)?.bf16_for_decoding(),
            (Self::Int8Dot, None) => base.int8_for_decoding(),
            (Self::Int8Dot, Some(a)) => a.for_inference(base)?.int8_for_decoding(),
        }
    }
}
