//! Models: loading a GGUF file or an HF directory into a trainable f32 transformer with its
//! tokenizer and chat template.

mod bf16_rows;
mod config;
mod export;
mod few_rows;
pub mod fused;
pub mod gguf;
mod gguf_header;
pub mod grad_ops;
mod hf;
mod int8_rows;
mod linear;
mod locate;
pub mod matmul;
pub mod ops;
mod packed;
pub mod portable;
mod team;
mod tokenizer;
mod transformer;
mod weights;

use std::path::{Path, PathBuf};

use candle_core::Device;

pub use config::{Architecture, ModelConfig};
pub use export::write_hf_dir;
pub use few_rows::MAX_ROWS as DETERMINISTIC_DECODE_ROWS;
pub use linear::{Linear, LoraLayer, Projection, Width, PROJECTIONS, PROJECTION_NAMES};
pub use locate::{resolve_model_path, DEFAULT_MODEL_FILE};
pub use tokenizer::Tokenizer;
pub use transformer::{KvCache, Padding, SequenceCache, Transformer};
pub use weights::Weights;

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};

/// A loaded base model: weights, tokenizer and chat template.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where the model was loaded from.
    pub path: PathBuf,
    /// The network.
    pub transformer: Transformer,
    /// Text ↔ ids.
    pub tokenizer: Tokenizer,
    /// The model's chat format.
    pub template: ChatTemplate,
    /// The names the model goes by: its path, and the name its metadata gives (GGUF
    /// `general.name`, HF `config.json`'s `_name_or_path`). Adapters loaded with
    /// `AdapterSet::load_for` are checked against them.
    pub names: Vec<String>,
}

impl Model {
    /// Loads a GGUF file or an HF model directory. `path` is looked up as given, then under
    /// `$TUNELAB_MODELS`, then under `./models`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::load_with_weights(path)?.0)
    }

    /// Loads the model as [`Model::load`] does, and also returns the weights it was built
    /// from (f32, under HF names). The two share their tensors' storage: reading the file
    /// once serves both checking an adapter against the model and merging it into the
    /// weights (`tunelab merge`).
    pub fn load_with_weights(path: impl AsRef<Path>) -> Result<(Self, Weights)> {
        let path = resolve_model_path(path.as_ref())?;
        let device = Device::Cpu;
        let loaded = if path.is_dir() { hf::load_dir(&path, &device)? } else { Self::load_gguf(&path, &device)? };
        // A token id past the embedding's rows fails deep in the first forward pass.
        let (tokens, rows) = (loaded.0.tokenizer.vocab_size(), loaded.0.transformer.config().vocab_size);
        if tokens > rows {
            return Err(Error::bad_model(
                &path,
                format!("the tokenizer has {tokens} tokens but the model's embedding only {rows} rows: they do not belong together"),
            ));
        }
        Ok(loaded)
    }

    /// Loads the model as [`Model::load`] does, then moves it to `device` (see
    /// [`crate::device::parse_device`]): the weights are read on the CPU first.
    pub fn load_on(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let mut model = Self::load(path)?;
        model.transformer = model.transformer.to_device(device)?;
        Ok(model)
    }

    fn load_gguf(path: &Path, device: &Device) -> Result<(Self, Weights)> {
        let mut file = gguf::GgufFile::open(path)?;
        let cfg = file.config()?;
        let tokenizer = Tokenizer::from_gguf(&file, path)?;
        let template_source = file.meta_str("tokenizer.chat_template").ok().map(str::to_string);
        let weights = file.weights(&cfg, device)?;
        let transformer = Transformer::load(&cfg, &weights)?;
        let template = template_for(template_source.as_deref(), &tokenizer, path)?;
        let names = std::iter::once(path.display().to_string()).chain(file.meta_str("general.name").ok().map(str::to_string)).collect();
        Ok((Self { path: path.to_path_buf(), transformer, tokenizer, template, names }, weights))
    }

    /// Reads only the configuration and the f32 weights of the model at `path`, without
    /// building the network (see [`Model::load_with_weights`] for both).
    pub fn load_weights(path: impl AsRef<Path>) -> Result<(ModelConfig, Weights)> {
        let path = resolve_model_path(path.as_ref())?;
        if path.is_dir() {
            hf::load_weights(&path, &Device::Cpu)
        } else {
            let mut file = gguf::GgufFile::open(&path)?;
            let cfg = file.config()?;
            let w = file.weights(&cfg, &Device::Cpu)?;
            Ok((cfg, w))
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        self.transformer.config()
    }

    /// Replaces the chat template by a named one (`default`, `chatml`, `qwen`, `llama3`).
    pub fn set_template(&mut self, name: &str) -> Result<()> {
        self.template = ChatTemplate::named(name, &self.tokenizer.bos_token(), &self.tokenizer.eos_token())?;
        Ok(())
    }
}

/// The model's own template when it has one, else LLaMA-Factory's `default`.
fn template_for(source: Option<&str>, tokenizer: &Tokenizer, path: &Path) -> Result<ChatTemplate> {
    let (bos, eos) = (tokenizer.bos_token(), tokenizer.eos_token());
    match source {
        Some(src) => ChatTemplate::new(src, &bos, &eos).map_err(|e| Error::bad_model(path, format!("its chat template: {e}"))),
        None => ChatTemplate::named("default", &bos, &eos),
    }
}
