//! LoRA: the low-rank adapter layer, adapter sets in PEFT's on-disk format, and merging.

mod adapter;
mod layer;

pub use adapter::{AdapterSet, LoraConfig, ALL_TARGETS};
pub use layer::LoraLayer;
