//! Working with other fine-tuning tools: [`llamafactory`] exports a dataset and tunelab's
//! training settings as a LLaMA-Factory project.

pub mod llamafactory;
