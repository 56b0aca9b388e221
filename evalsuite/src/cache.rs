//! The generation cache: outputs keyed by (backend, model hash, adapter hash, decoding,
//! prompt), appended to a JSONL file one flushed-and-synced line per output, so an
//! interrupted `eval run` resumes where it stopped and never regenerates a finished case.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tunelab::GenerationConfig;

use crate::backend::{BackendInfo, Generated};
use crate::case::Case;
use crate::error::{Error, Result};
use crate::hashing;

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    #[serde(flatten)]
    generated: Generated,
}

/// An append-only cache of generations.
pub struct GenerationCache {
    path: PathBuf,
    entries: HashMap<String, Generated>,
    file: File,
    /// Lines that could not be read (a torn last line after a crash), skipped.
    pub unreadable_lines: usize,
}

impl GenerationCache {
    /// Opens (or creates) the cache file, reading what it holds.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let mut entries = HashMap::new();
        let mut unreadable_lines = 0;
        if path.exists() {
            for line in tunelab::fsutil::read_input(path)?.split(|&b| b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Entry>(line) {
                    Ok(e) => {
                        entries.insert(e.key, e.generated);
                    }
                    Err(_) => unreadable_lines += 1,
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io("opening", path, e))?;
        // A torn last line (no newline) must not swallow the next entry.
        if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > 0 && !ends_with_newline(path).map_err(|e| Error::reading(path, e))? {
            file.write_all(b"\n").map_err(|e| Error::io("appending to", path, e))?;
        }
        Ok(Self { path: path.to_path_buf(), entries, file, unreadable_lines })
    }

    /// The cache key of a case's generation.
    pub fn key(backend: &BackendInfo, decoding: &GenerationConfig, case: &Case) -> String {
        let messages: Vec<_> = case.messages.iter().map(|m| json!([m.role.as_str(), m.content])).collect();
        let mut material = json!({
            "kind": backend.kind,
            "model": if backend.model_sha256.is_some() { None } else { Some(&backend.model) },
            "model_sha256": backend.model_sha256,
            "adapter_sha256": backend.adapter_sha256,
            "endpoint": backend.endpoint,
            "decoding": decoding,
            "messages": messages,
        });
        // Only rounding weights and non-CPU devices join the key, so caches written before the field existed
        // still serve the exact weights' generations.
        if let Some(w) = &backend.weights {
            material["weights"] = json!(w);
        }
        if let Some(d) = &backend.device {
            material["device"] = json!(d);
        }
        hashing::sha256_bytes(material.to_string().as_bytes())
    }

    /// A cached generation.
    pub fn get(&self, key: &str) -> Option<&Generated> {
        self.entries.get(key)
    }

    /// Stores a generation durably (flushed and synced before returning).
    pub fn put(&mut self, key: String, generated: Generated) -> Result<()> {
        let mut line = serde_json::to_vec(&Entry { key: key.clone(), generated: generated.clone() }).expect("an entry always serializes");
        line.push(b'\n');
        self.file.write_all(&line).and_then(|_| self.file.sync_data()).map_err(|e| Error::io("appending to", &self.path, e))?;
        self.entries.insert(key, generated);
        Ok(())
    }

    /// Number of cached generations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}
