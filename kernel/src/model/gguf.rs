//! Reading a GGUF file: hyper-parameters from its metadata, every tensor dequantized to
//! f32 under its HF name, with llama's q/k rows un-permuted back to HF's rotate-half layout.
//! Q4_1 and Q8_0 matrices also keep their blocks (rows in the same order) for decoding.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use super::config::{Architecture, ModelConfig};
use super::linear::PROJECTIONS;
use super::packed::PackedRows;
use super::weights::Weights;
use crate::error::{Error, Result};

/// A parsed GGUF file: metadata plus the open reader for its tensor data.
pub struct GgufFile {
    path: std::path::PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens `path`, parses the header and checks that every tensor lies inside the file
    /// (a truncated download is reported here, not as a read error later).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        // candle divides by the declared alignment: 0 must be refused before it reads.
        if super::gguf_header::declared_alignment(&mut reader) == Some(0) {
            return Err(Error::bad_model(
                path,
                "metadata general.alignment is 0; GGUF tensor data must be aligned to a positive number of bytes (32 by default)",
            ));
        }
        reader.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut reader).map_err(|e| Error::bad_model(path, format!("not a readable GGUF file: {e}")))?;
        for (name, info) in &content.tensor_infos {
            // The header's dimensions are untrusted: products that overflow mean "past the end".
            let block = info.ggml_dtype.block_size() as u64;
            let elems = info.shape.dims().iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            if elems.is_some_and(|n| !n.is_multiple_of(block)) {
                return Err(Error::bad_model(
                    path,
                    format!("tensor {name} has shape {:?}, not whole blocks of {block} {:?} values", info.shape.dims(), info.ggml_dtype),
                ));
            }
            let bytes = elems.and_then(|n| (n / block).checked_mul(info.ggml_dtype.type_size() as u64));
            let end = bytes.and_then(|b| content.tensor_data_offset.checked_add(info.offset)?.checked_add(b)).unwrap_or(u64::MAX);
            if end > file_len {
                return Err(Error::bad_model(path, format!("file is truncated: tensor {name} ends at byte {end} but the file has {file_len} bytes")));
            }
        }
        Ok(Self { path: path.to_path_buf(), content, reader })
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata string, or an error naming the missing key.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.meta(key)?.to_string().map(String::as_str).map_err(|_| Error::bad_model(&self.path, format!("metadata {key} is not a string")))
    }

    fn meta(&self, key: &str) -> Result<&Value> {
        self.content.metadata.get(key).ok_or_else(|| Error::bad_model(&self.path, format!("missing metadata key {key}")))
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key)?;
        value_as_u64(v).map(|n| n as usize).ok_or_else(|| Error::bad_model(&self.path, format!("metadata {key} is not an integer")))
    }

    fn meta_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.content.metadata.get(key) {
            None => Ok(default),
            Some(v) => v.to_f64().or_else(|_| v.to_f32().map(f64::from)).map_err(|_| Error::bad_model(&self.path, format!("metadata {key} is not a float"))),
        }
    }

    /// The model's architecture, from `general.architecture`.
    pub fn architecture(&self) -> Result<Architecture> {
        let arch = self.meta_str("general.architecture")?;
        Architecture::parse(arch).ok_or_else(|| Error::UnsupportedArchitecture { path: self.path.clone(), arch: arch.to_string() })
    }

    /// Hyper-parameters from the `{arch}.*` metadata keys.
    pub fn config(&self) -> Result<ModelConfig> {
        let architecture = self.architecture()?;
        let a = self.meta_str("general.architecture")?.to_string();
        let key = |k: &str| format!("{a}.{k}");
        let num_attention_heads = self.meta_usize(&key("attention.head_count"))?;
        let vocab_size = match self.meta_usize(&key("vocab_size")) {
            Ok(v) => v,
            Err(_) => self.token_count()?,
        };
        let cfg = ModelConfig {
            architecture,
            hidden_size: self.meta_usize(&key("embedding_length"))?,
            intermediate_size: self.meta_usize(&key("feed_forward_length"))?,
            num_hidden_layers: self.meta_usize(&key("block_count"))?,
            num_attention_heads,
            num_key_value_heads: self.meta_usize(&key("attention.head_count_kv")).unwrap_or(num_attention_heads),
            vocab_size,
            rope_theta: self.meta_f64_or(&key("rope.freq_base"), 10_000.0)?,
            rms_norm_eps: self.meta_f64_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)?,
            max_position_embeddings: self.meta_usize(&key("context_length")).unwrap_or(2048),
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
        };
        cfg.validate().map_err(|m| Error::bad_model(&self.path, m))?;
        self.check_plain_rope(&key("rope.scaling.type"))?;
        // Tensors of layers past block_count would be silently ignored: the header lies.
        if let Some(extra) = self.content.tensor_infos.keys().find(|n| layer_of(n).is_some_and(|l| l >= cfg.num_hidden_layers)) {
            return Err(Error::bad_model(&self.path, format!("tensor {extra} belongs to a layer past block_count {}", cfg.num_hidden_layers)));
        }
        Ok(cfg)
    }

    /// Refuses RoPE scaling (metadata `{arch}.rope.scaling.type`, or Llama 3.1's
    /// `rope_freqs` tensor): tunelab applies plain RoPE, so positions would be wrong.
    fn check_plain_rope(&self, scaling_key: &str) -> Result<()> {
        let scaling = self.content.metadata.get(scaling_key).and_then(|v| v.to_string().ok()).filter(|t| t.as_str() != "none");
        if let Some(kind) = scaling {
            return Err(Error::bad_model(&self.path, format!("{scaling_key} is {kind:?}: RoPE scaling is not supported (tunelab applies plain RoPE)")));
        }
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(Error::bad_model(
                &self.path,
                "tensor rope_freqs.weight (Llama 3.1-style RoPE frequency factors) is not supported: tunelab applies plain RoPE",
            ));
        }
        Ok(())
    }

    fn token_count(&self) -> Result<usize> {
        Ok(self.meta("tokenizer.ggml.tokens")?.to_vec().map_err(|_| Error::bad_model(&self.path, "metadata tokenizer.ggml.tokens is not an array"))?.len())
    }

    /// Reads and dequantizes every tensor to f32, renamed to HF names; llama q/k weights
    /// are un-permuted (llama.cpp's converter interleaves them for its rope kernel).
    pub fn weights(&mut self, cfg: &ModelConfig, device: &Device) -> Result<Weights> {
        let names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        let mut tensors = HashMap::with_capacity(names.len());
        let mut packed = HashMap::new();
        for name in names {
            let Some(hf_name) = hf_tensor_name(&name) else {
                // rope_freqs and similar derived tensors are recomputed, not loaded.
                continue;
            };
            let q =
                self.content.tensor(&mut self.reader, &name, device).map_err(|e| Error::bad_model(&self.path, format!("cannot read tensor {name}: {e}")))?;
            let mut t = q.dequantize(device).map_err(|e| Error::bad_model(&self.path, format!("cannot dequantize tensor {name}: {e}")))?;
            let mut blocks = match (t.dims2(), device.is_cpu()) {
                (Ok((rows, cols)), true) => q.data().ok().and_then(|data| PackedRows::from_gguf(q.dtype(), &data, rows, cols)),
                _ => None,
            };
            let rope_heads = match cfg.architecture {
                Architecture::Llama if name.ends_with("attn_q.weight") => Some(cfg.num_attention_heads),
                Architecture::Llama if name.ends_with("attn_k.weight") => Some(cfg.num_key_value_heads),
                _ => None,
            };
            if let Some(heads) = rope_heads {
                t = unpermute_rope_rows(&t, heads)?;
                blocks = blocks.map(|b| b.with_rows_in_order(&unpermuted_row_order(b.dims().0, heads)));
            }
            if let Some(b) = blocks {
                packed.insert(hf_name.clone(), Arc::new(b));
            }
            tensors.insert(hf_name, t);
        }
        Ok(Weights::new(&self.path, tensors).with_packed(packed))
    }
}

/// Integer metadata of any width as u64.
pub(crate) fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

/// Maps a GGUF tensor name (`blk.3.attn_q.weight`) to its HF name
/// (`model.layers.3.self_attn.q_proj.weight`); `None` for tensors tunelab recomputes.
pub fn hf_tensor_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => format!("model.layers.{layer}.input_layernorm"),
        "ffn_norm" => format!("model.layers.{layer}.post_attention_layernorm"),
        _ => PROJECTIONS.iter().find(|p| p.gguf == module)?.module(layer),
    };
    Some(format!("{hf}.{kind}"))
}

/// The row order [`unpermute_rope_rows`] produces: row `r` of its result is row
/// `order[r]` of its input (`rows` rows, `n_head` heads).
fn unpermuted_row_order(rows: usize, n_head: usize) -> Vec<usize> {
    let half = rows / n_head / 2;
    // Input rows are [h, half, 2]; output rows [h, 2, half].
    (0..rows)
        .map(|r| {
            let (h, rest) = (r / (2 * half), r % (2 * half));
            let (pair, i) = (rest / half, rest % half);
            h * 2 * half + i * 2 + pair
        })
        .collect()
}

/// Inverts llama.cpp's `permute(w, n_head)`, which reorders each head's rows from
/// rotate-half order `[h, 2, d/2]` to interleaved order `[h, d/2, 2]`.
pub fn unpermute_rope_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((n_head, out / n_head / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// The layer index of a GGUF tensor name (`blk.N.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_map_to_hf() {
        assert_eq!(hf_tensor_name("blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_tensor_name("blk.0.ffn_down.weight").as_deref(), Some("model.layers.0.mlp.down_proj.weight"));
        assert_eq!(hf_tensor_name("blk.1.attn_k.bias").as_deref(), Some("model.layers.1.self_attn.k_proj.bias"));
        assert_eq!(hf_tensor_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_tensor_name("rope_freqs.weight"), None);
    }

    /// llama.cpp's permute, written from its converter's numpy: reshape (h, 2, d/2, in),
    /// swap axes 1 and 2, reshape back. Un-permuting must undo it exactly.
    #[test]
    fn the_row_order_is_the_one_unpermute_produces() -> candle_core::Result<()> {
        let (rows, heads) = (24, 3);
        let w = Tensor::arange(0f32, rows as f32, &Device::Cpu)?.reshape((rows, 1))?;
        let got: Vec<usize> = unpermute_rope_rows(&w, heads)?.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| *v as usize).collect();
        assert_eq!(got, unpermuted_row_order(rows, heads));
        Ok(())
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() -> candle_core::Result<()> {
        let (h, d, inp) = (3, 8, 5);
        let w = Tensor::arange(0f32, (h * d * inp) as f32, &Device::Cpu)?.reshape((h * d, inp))?;
        let permuted = w.reshape((h, 2, d / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((h * d, inp))?;
        let back = unpermute_rope_rows(&permuted, h)?;
        assert_eq!(back.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        Ok(())
    }
}
