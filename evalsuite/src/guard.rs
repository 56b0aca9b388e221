//! The shipped general-capability guard suite (64 bilingual questions with reference
//! answers and their rubric), built into the library so an installed `tunelab` has it
//! wherever it runs, not only inside a source checkout.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The guard suite's files: (file name, contents).
pub const FILES: [(&str, &str); 3] = [
    ("suite.toml", include_str!("../../rubrics/guard/suite.toml")),
    ("rubric.toml", include_str!("../../rubrics/guard/rubric.toml")),
    ("cases.jsonl", include_str!("../../rubrics/guard/cases.jsonl")),
];

/// Writes the guard suite into `dir` (created if needed) and returns its `suite.toml`.
/// Files already there with the same contents are kept; a different file of the same name
/// is an error, so an edited guard suite is never overwritten silently.
pub fn export(dir: &Path) -> Result<PathBuf> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::io("writing", path, source)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, contents) in FILES {
        let path = dir.join(name);
        match std::fs::File::open(&path) {
            Ok(file) => {
                // One byte past the shipped file tells "longer" apart without reading it all.
                let mut existing = Vec::new();
                file.take(contents.len() as u64 + 1).read_to_end(&mut existing).map_err(io(&path))?;
                if existing != contents.as_bytes() {
                    return Err(Error::Suite { path, message: "differs from the shipped guard suite; move it away or point --guard-dir elsewhere".into() });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tunelab::fsutil::write_atomic(&path, contents.as_bytes())?,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(dir.join("suite.toml"))
}
