//! `run.json`: one typed, versioned record of a run's provenance, written by `eval run` and
//! read back by the same type in every reader (`eval summary`, reports, the gate).
//!
//! Scores are not in it: readers aggregate `results.parquet`, the one copy of the results.
//! Runs written before the record was versioned (no `schema_version`, a hand-built
//! per-category table that is now ignored) still read, as version 0.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tunelab::GenerationConfig;

use crate::backend::BackendInfo;
use crate::error::{Error, Result};
use crate::rubric::RubricInfo;

/// The layout version this build writes (and the newest it reads).
pub const SCHEMA_VERSION: u32 = 1;

/// Most bytes of a `run.json` read back (a run's provenance is a few kilobytes).
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// A run's provenance: what was evaluated, on what, with which settings, where and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Layout version ([`SCHEMA_VERSION`] when written by this build; 0 for runs written
    /// before versioning).
    #[serde(default)]
    pub schema_version: u32,
    /// Run name (the directory's name).
    pub name: String,
    /// tunelab version that wrote the run.
    pub tunelab_version: String,
    /// The command line.
    pub command: String,
    /// Start time, RFC 3339 (UTC).
    pub started_at: String,
    /// The suite evaluated.
    pub suite: SuiteRef,
    /// Each rubric with its checks.
    pub rubrics: Vec<RubricInfo>,
    /// The backend (model, adapter, endpoint) with hashes.
    pub backend: BackendInfo,
    /// Decoding settings.
    pub decoding: GenerationConfig,
    /// Sampler seed (also in `decoding`).
    pub seed: u64,
    /// Which cases were selected.
    pub selection: Selection,
    /// The machine the run ran on.
    pub machine: Machine,
    /// Wall-clock seconds per phase.
    pub durations_s: Durations,
    /// Case and row counts.
    pub counts: Counts,
}

/// The suite file and every file it drew cases or rubrics from, with hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteRef {
    /// Suite name.
    pub name: String,
    /// Suite file.
    pub path: PathBuf,
    /// SHA-256 over the suite and its files.
    pub sha256: String,
    /// Each file with its SHA-256.
    pub files: Vec<FileRef>,
}

/// A file with its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path as the suite names it.
    pub path: PathBuf,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// The case selection of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Only these categories (all when empty).
    pub categories: Vec<String>,
    /// At most this many cases per category.
    pub limit_per_category: Option<usize>,
    /// The slice of the selected cases this run evaluated (`None`: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

/// Slice `index` of `count` (1-based): the cases whose `category`/`id` hash to it, so a
/// case always lands in the same shard, whatever the suite's order or the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedShard")]
pub struct Shard {
    /// Which slice, 1..=count.
    pub index: usize,
    /// How many slices.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` (1 ≤ I ≤ N).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (i, n) = text.split_once('/').ok_or_else(|| format!("shard {text:?} is not I/N (e.g. 2/4)"))?;
        let (index, count) = (i.trim().parse::<usize>(), n.trim().parse::<usize>());
        match (index, count) {
            (Ok(index), Ok(count)) if count >= 1 && (1..=count).contains(&index) => Ok(Self { index, count }),
            _ => Err(format!("shard {text:?} must be I/N with 1 ≤ I ≤ N")),
        }
    }

    /// Whether the case `category`/`id` belongs to this shard.
    pub fn contains(&self, category: &str, id: &str) -> bool {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new().chain_update(category.as_bytes()).chain_update([0u8]).chain_update(id.as_bytes()).finalize();
        let bucket = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) % self.count as u64;
        bucket as usize == self.index - 1
    }
}

/// A shard as a run record spells it, before its range is checked.
#[derive(Deserialize)]
struct UncheckedShard {
    index: usize,
    count: usize,
}

impl TryFrom<UncheckedShard> for Shard {
    type Error = String;

    fn try_from(s: UncheckedShard) -> std::result::Result<Self, String> {
        Self::parse(&format!("{}/{}", s.index, s.count))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Where a run ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// CPU model name.
    pub cpu: String,
}

impl Machine {
    /// The machine this process runs on.
    pub fn current() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
            .unwrap_or_default();
        Self {
            hostname,
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu,
        }
    }
}

/// Wall-clock seconds per phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// Generating outputs (cache hits included).
    pub generation: f64,
    /// Scoring them.
    pub scoring: f64,
    /// Both.
    pub total: f64,
}

/// How many cases and result rows a run holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Cases evaluated.
    pub cases: usize,
    /// Cases whose output came from the generation cache.
    pub cached: usize,
    /// Rows of `results.parquet` (case × check).
    pub rows: usize,
    /// Checks whose scorer could not compute a value (0 in runs written before it was
    /// recorded).
    #[serde(default)]
    pub errored_checks: usize,
}

impl RunRecord {
    /// Reads `path` (a run's `run.json`), refusing a layout newer than this build's.
    pub fn read(path: &Path) -> Result<Self> {
        let io = |source| Error::reading(path, source);
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > MAX_RECORD_BYTES {
            return Err(Error::RecordTooLarge { path: path.to_path_buf(), bytes, limit: MAX_RECORD_BYTES });
        }
        // Read at most one byte past the limit: a FIFO or /proc file reports a length of 0.
        let mut text = String::new();
        std::fs::File::open(path).and_then(|f| f.take(MAX_RECORD_BYTES + 1).read_to_string(&mut text)).map_err(io)?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            return Err(Error::RecordTooLarge { path: path.to_path_buf(), bytes: text.len() as u64, limit: MAX_RECORD_BYTES });
        }
        // The version first, so a newer layout is named as such rather than as malformed.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            schema_version: u32,
        }
        let malformed = |source| Error::RecordMalformed { path: path.to_path_buf(), source };
        let version: Version = serde_json::from_str(&text).map_err(malformed)?;
        if version.schema_version > SCHEMA_VERSION {
            return Err(Error::RecordNewer { path: path.to_path_buf(), found: version.schema_version, supported: SCHEMA_VERSION });
        }
        serde_json::from_str(&text).map_err(malformed)
    }

    /// The record as pretty JSON, the form `run.json` holds.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// What was evaluated, for headings: the model, the adapter when there is one, and the
    /// weights when they were rounded (not the exact f32 model), and the device when it was
    /// not the CPU.
    pub fn evaluated(&self) -> String {
        let model = match &self.backend.adapter {
            Some(a) => format!("{} + adapter {a}", self.backend.model),
            None => self.backend.model.clone(),
        };
        let model = match &self.backend.weights {
            Some(w) => format!("{model} ({w} weights)"),
            None => model,
        };
        match &self.backend.device {
            Some(d) => format!("{model} on {d}"),
            None => model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `run.json` written by tunelab before the record was versioned (with the per-category
    /// table it then carried).
    fn unversioned() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/runs/run-v0.json")
    }

    /// A fresh scratch directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tunelab-record-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_run_written_before_versioning_reads_as_version_0() {
        let r = RunRecord::read(&unversioned()).unwrap();
        assert_eq!(r.schema_version, 0);
        assert_eq!(r.name, "base");
        assert_eq!(r.counts.cases, 150);
        assert_eq!(r.backend.kind, "local");
        assert_eq!(r.decoding.max_new_tokens, 256);
        assert!(r.rubrics.iter().any(|k| k.name.contains("security")), "{:?}", r.rubrics);
    }

    #[test]
    fn written_records_read_back_equal_at_the_current_version() {
        let mut r = RunRecord::read(&unversioned()).unwrap();
        r.schema_version = SCHEMA_VERSION;
        let dir = scratch("roundtrip");
        let path = dir.join("run.json");
        std::fs::write(&path, r.to_json().unwrap()).unwrap();
        assert_eq!(RunRecord::read(&path).unwrap(), r);
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(written.get("categories").is_none(), "scores belong in results.parquet, not run.json");
        assert_eq!(written["schema_version"], SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_or_foreign_record_is_refused_with_file_and_versions() {
        let dir = scratch("refused");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(unversioned()).unwrap()).unwrap();
        v["schema_version"] = 7.into();
        let newer = dir.join("newer.json");
        std::fs::write(&newer, v.to_string()).unwrap();
        let e = RunRecord::read(&newer).unwrap_err().to_string();
        assert!(e.contains("newer.json") && e.contains("schema_version 7") && e.contains(&format!("up to {SCHEMA_VERSION}")), "{e}");

        let foreign = dir.join("foreign.json");
        std::fs::write(&foreign, r#"{"hello": "world"}"#).unwrap();
        let e = RunRecord::read(&foreign).unwrap_err().to_string();
        assert!(e.contains("foreign.json") && e.contains("not a tunelab run record"), "{e}");
        assert!(RunRecord::read(&dir.join("missing.json")).unwrap_err().to_string().contains("missing.json"));
    }

    /// A shard out of range in a record (`index` 0 or above `count`) is refused when read,
    /// where it would otherwise reach `eval merge`'s bookkeeping.
    #[test]
    fn a_record_with_a_shard_out_of_range_is_refused() {
        let dir = scratch("shard");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(unversioned()).unwrap()).unwrap();
        for (index, count, ok) in [(1, 3, true), (3, 3, true), (0, 3, false), (4, 3, false), (1, 0, false)] {
            v["selection"]["shard"] = serde_json::json!({"index": index, "count": count});
            let path = dir.join("shard.json");
            std::fs::write(&path, v.to_string()).unwrap();
            match RunRecord::read(&path) {
                Ok(r) => assert!(ok && r.selection.shard == Some(Shard { index, count }), "{index}/{count} read as {:?}", r.selection.shard),
                Err(e) => assert!(!ok && e.to_string().contains("1 ≤ I ≤ N") && e.to_string().contains("shard.json"), "{index}/{count}: {e}"),
            }
        }
    }
}
