//! Chat formatting: messages and the Jinja chat templates that turn them into prompt text.

mod template;

pub use template::{ChatTemplate, Message, Role};
