//! Content hashes for provenance and cache keys (SHA-256, lowercase hex).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// SHA-256 of some bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// SHA-256 of a file's bytes, read in blocks (model files are hundreds of megabytes).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// SHA-256 over a directory's regular files (sorted by name, each name and content hashed),
/// or of the file itself when `path` is a file.
pub fn sha256_path(path: &Path) -> std::io::Result<String> {
    if !path.is_dir() {
        return sha256_file(path);
    }
    let mut names: Vec<_> =
        std::fs::read_dir(path)?.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.file_name()).collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        hasher.update(name.as_encoded_bytes());
        hasher.update([0]);
        hasher.update(sha256_file(&path.join(&name))?.as_bytes());
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The first 12 hex digits of a hash, for names and messages.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
