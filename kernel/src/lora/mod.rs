//! LoRA: PEFT's initialisation of the low-rank update, adapter sets in PEFT's on-disk
//! format, and merging. The update's weights ([`LoraLayer`]) and the projection they attach
//! to belong to the model (`crate::model::Linear`); this module depends on the model, not
//! the other way round.

mod adapter;
mod base_model;
mod gguf_lora;
mod layer;
mod peft_compat;

pub use crate::model::LoraLayer;
pub use adapter::{AdapterSet, LoraConfig, ALL_TARGETS};
