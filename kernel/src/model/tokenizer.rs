//! Text ↔ token ids, from an HF `tokenizer.json` or rebuilt from GGUF `tokenizer.ggml.*`
//! metadata (byte-level BPE with the pre-tokenizer llama.cpp names in `tokenizer.ggml.pre`).

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Value as Json};

use super::gguf::{value_as_u64, GgufFile};
use crate::error::{Error, Result};

/// GPT-2's pre-tokenizer regex as used by llama 3 (`llama-bpe`): digits in runs of ≤ 3.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex: like llama 3's but every digit on its own.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special-token texts that end a turn in common chat formats (llama.cpp's end-of-generation list).
const END_OF_TURN_TEXTS: &[&str] = &["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "</s>"];

/// A tokenizer plus the special tokens generation and chat templates need.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    stop_ids: BTreeSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads an HF `tokenizer.json`; special tokens come from `tokenizer_config.json` and
    /// `config.json` beside it when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner =
            tokenizers::Tokenizer::from_bytes(crate::fsutil::read_input(&path)?).map_err(|e| Error::bad_model(&path, format!("cannot load tokenizer: {e}")))?;
        let tcfg = read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
        let mcfg = read_json_opt(&dir.join("config.json"))?.unwrap_or(Json::Null);
        let token_id = |key: &str| -> Option<u32> {
            let text = match tcfg.get(key)? {
                Json::String(s) => s.clone(),
                Json::Object(o) => o.get("content")?.as_str()?.to_string(),
                _ => return None,
            };
            inner.token_to_id(&text)
        };
        let bos = token_id("bos_token").or_else(|| first_id(mcfg.get("bos_token_id")));
        let eos = token_id("eos_token").or_else(|| first_id(mcfg.get("eos_token_id")));
        let pad = token_id("pad_token");
        let add_bos = tcfg.get("add_bos_token").and_then(Json::as_bool).unwrap_or(false);
        let mut tok = Self { inner, bos, eos, pad, add_bos, stop_ids: BTreeSet::new() };
        if let Some(Json::Array(ids)) = mcfg.get("eos_token_id") {
            tok.stop_ids.extend(ids.iter().filter_map(|v| v.as_u64()).map(saturating_id));
        }
        tok.collect_stop_ids();
        tok.checked(&path)
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(gguf: &GgufFile, path: &Path) -> Result<Self> {
        let meta = gguf.metadata();
        let bad = |m: String| Error::bad_model(path, m);
        let model = gguf.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model is {model:?}; tunelab rebuilds only byte-level BPE (\"gpt2\") tokenizers from GGUF — use an HF model directory with tokenizer.json instead"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = meta.get(key).ok_or_else(|| bad(format!("missing metadata key {key}")))?;
            let arr = arr.to_vec().map_err(|_| bad(format!("metadata {key} is not an array")))?;
            arr.iter().map(|v| v.to_string().cloned().map_err(|_| bad(format!("metadata {key} holds a non-string")))).collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| value_as_u64(v).map_or(1, |x| x as i64)).collect(),
            _ => vec![1; tokens.len()],
        };
        let special_id = |key: &str| meta.get(key).and_then(value_as_u64).map(saturating_id);
        let pre = meta.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("default");
        let pre_tokenizer = pre_tokenizer_for(pre)
            .ok_or_else(|| bad(format!("tokenizer.ggml.pre {pre:?} is not supported (supported: smollm, gpt2, default, llama-bpe, llama3, qwen2)")))?;

        let vocab: serde_json::Map<String, Json> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
        // Token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
        let added: Vec<Json> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == 3 || ty == 4)
            .map(|(i, (t, &ty))| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": ty == 3})
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let inner =
            tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes()).map_err(|e| bad(format!("cannot build tokenizer from GGUF metadata: {e}")))?;
        let add_bos = meta.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let mut tok = Self {
            inner,
            bos: special_id("tokenizer.ggml.bos_token_id"),
            eos: special_id("tokenizer.ggml.eos_token_id"),
            pad: special_id("tokenizer.ggml.padding_token_id"),
            add_bos,
            stop_ids: BTreeSet::new(),
        };
        if let Some(eot) = special_id("tokenizer.ggml.eot_token_id") {
            tok.stop_ids.insert(eot);
        }
        tok.collect_stop_ids();
        tok.checked(path)
    }

    /// `self`, when every special id it keeps is in the vocabulary (ids come from metadata
    /// that may be wrong); else an error naming `path` and the id.
    fn checked(self, path: &Path) -> Result<Self> {
        let vocab = self.vocab_size();
        let named = [("bos", self.bos), ("eos", self.eos), ("pad", self.pad)].into_iter().filter_map(|(n, id)| Some((n, id?)));
        if let Some((name, id)) = named.chain(self.stop_ids.iter().map(|&id| ("stop", id))).find(|&(_, id)| id as usize >= vocab) {
            return Err(Error::bad_model(path, format!("{name} token id {id} is outside the vocabulary of {vocab} tokens")));
        }
        Ok(self)
    }

    fn collect_stop_ids(&mut self) {
        self.stop_ids.extend(self.eos);
        for text in END_OF_TURN_TEXTS {
            if let Some(id) = self.inner.token_to_id(text) {
                self.stop_ids.insert(id);
            }
        }
    }

    /// Token ids of `text`. Special-token text (`<|im_start|>`) becomes its special id;
    /// no BOS is added (chat templates write their own).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like [`Tokenizer::encode`], with the model's BOS prepended when its tokenizer asks
    /// for one (`add_bos_token`).
    pub fn encode_with_bos(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Text of `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Tokenizer(format!("cannot decode ids: {e}")))
    }

    /// Id of a token's text, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Beginning-of-sequence token id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Padding token id, falling back to EOS (padding is always masked).
    pub fn pad_id(&self) -> u32 {
        self.pad.or(self.eos).unwrap_or(0)
    }

    /// Whether encoding for generation prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Text of the BOS token (for chat templates' `bos_token`).
    pub fn bos_token(&self) -> String {
        self.bos.and_then(|id| self.id_to_token(id)).unwrap_or_default()
    }

    /// Text of the EOS token (for chat templates' `eos_token`).
    pub fn eos_token(&self) -> String {
        self.eos.and_then(|id| self.id_to_token(id)).unwrap_or_default()
    }

    /// Token ids that end generation: EOS, EOT and known end-of-turn tokens.
    pub fn stop_ids(&self) -> &BTreeSet<u32> {
        &self.stop_ids
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The HF pre-tokenizer equivalent to llama.cpp's named pre-tokenizer `pre`.
fn pre_tokenizer_for(pre: &str) -> Option<Json> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        // SmolLM: every digit alone, then GPT-2's regex, byte-level without prefix space.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt2" | "default" => byte_level(true),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
        _ => return None,
    })
}

/// A token id from metadata; ids past `u32` become `u32::MAX`, which no vocabulary holds, so
/// [`Tokenizer::checked`] refuses them instead of a truncated id meaning another token.
fn saturating_id(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

fn first_id(v: Option<&Json>) -> Option<u32> {
    match v? {
        Json::Number(n) => n.as_u64().map(saturating_id),
        Json::Array(a) => a.first()?.as_u64().map(saturating_id),
        _ => None,
    }
}

/// Reads a JSON file if it exists; a malformed one is an error naming the file.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Json>> {
    if !path.exists() {
        return Ok(None);
    }
    // Bounded like every other input file (`--max-input-mb`).
    let text = crate::fsutil::read_input_text(path)?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::bad_model(path, format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())))
}
