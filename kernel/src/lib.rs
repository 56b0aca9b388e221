//! tunelab's training library: everything a notebook or the CLI needs to load a model,
//! talk to it, and (in later modules) fine-tune it with LoRA.
//!
//! - [`Model`] loads a GGUF file or an HF directory into a trainable f32 [`Transformer`]
//!   with its [`Tokenizer`] and [`ChatTemplate`].
//! - [`Generator`] decodes greedily or by sampling, streaming text, one prompt or a batch.
//!
//! ```no_run
//! use tunelab::prelude::*;
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let prompt = model.template.render_prompt(None, "Explain photosynthesis in two sentences.")?;
//! let out = Generator::new(&model.transformer, &model.tokenizer)
//!     .generate(&prompt, &GenerationConfig::greedy(64), |piece| print!("{piece}"))?;
//! println!("\n{:.1} tok/s", out.tokens_per_second());
//! # Ok::<(), tunelab::Error>(())
//! ```

#![warn(missing_docs)]

pub mod chat;
pub mod data;
pub mod device;
pub mod display;
mod error;
pub mod fsutil;
pub mod generate;
pub mod lora;
pub mod model;
pub mod notebook;
mod process_env;
pub mod splitmix;
pub mod train;

pub use chat::{ChatTemplate, Message, Role};
pub use device::parse_device;
pub use error::{Error, Result};
pub use generate::{DecodeWeights, FinishReason, Generation, GenerationConfig, Generator};
pub use lora::{AdapterSet, LoraConfig};
pub use model::{Model, ModelConfig, Tokenizer, Transformer};

/// Everything a notebook usually needs, in one import.
pub mod prelude {
    pub use crate::chat::{ChatTemplate, Message, Role};
    pub use crate::data::{Dataset, ValidationReport};
    pub use crate::generate::{FinishReason, Generation, GenerationConfig, Generator};
    pub use crate::lora::{AdapterSet, LoraConfig};
    pub use crate::model::{Model, ModelConfig, Tokenizer};
    pub use crate::notebook::{compare, live_training, LiveDisplay};
    // In scope without its name: every `Debug` value then shows in one compile.
    pub use crate::notebook::DebugDisplay as _;
    pub use crate::train::{TrainConfig, TrainEvent, TrainOutcome, Trainer};
    pub use crate::{Error, Result};
}
