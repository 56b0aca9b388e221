//! Suites: a TOML file naming case sets (JSONL, Alpaca/ShareGPT/OpenAI records read by
//! tunelab's dataset loader), each with a category and a rubric. A suite may name its
//! training file (`train = "…"`): cases whose normalized prompt appears in it are `seen`,
//! a `heldout` case found there is an error (a leak), and sets with `category = "auto"` are
//! sorted into `seen` / `heldout` case by case.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tunelab::data::{normalize_text, Dataset, Example, SourceRef};
use tunelab::{Message, Role};

use crate::hashing;
use crate::rubric::{Rubric, RubricError};

/// The categories the method names; others are allowed.
pub const CATEGORIES: [&str; 4] = ["seen", "heldout", "ood", "guard"];

/// Why a suite could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The suite TOML is malformed.
    #[error("suite {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A case file has unusable records.
    #[error("cases in {path}: {issues}")]
    Cases {
        /// The case file.
        path: PathBuf,
        /// Each problem with its line.
        issues: String,
    },
    /// A rubric failed to load.
    #[error(transparent)]
    Rubric(#[from] RubricError),
    /// Two cases share an id.
    #[error("duplicate case id `{id}` at {first} and {second}")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Where it first appears.
        first: SourceRef,
        /// Where it appears again.
        second: SourceRef,
    },
    /// Held-out cases appear in the training file.
    #[error("{count} held-out case(s) appear in the training file {train}: {examples}")]
    Leak {
        /// How many held-out cases leaked.
        count: usize,
        /// The training file.
        train: PathBuf,
        /// Some of them, with their places.
        examples: String,
    },
}

/// One evaluation case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable id (the record's `id`, else `<file stem>-<line>`).
    pub id: String,
    /// seen, heldout, ood, guard or a custom category.
    pub category: String,
    /// The conversation up to (not including) the reference answer, system prompt included.
    pub messages: Vec<Message>,
    /// The reference answer (the record's output / final assistant turn).
    pub reference: String,
    /// The record's `input` field (code for the security task), for `location_line`.
    pub input: String,
    /// Free labels from the record.
    pub tags: Vec<String>,
    /// Terms for the `keywords` scorer.
    pub keywords: Vec<String>,
    /// The rubric that scores this case.
    pub rubric: Arc<Rubric>,
    /// Where the case was read from.
    pub source: SourceRef,
    /// The case as a training example (prompt + reference), for perplexity.
    pub example: Example,
}

impl Case {
    /// A single-turn case built in code (notebooks, benchmarks): `prompt` as the user turn,
    /// `reference` as the expected answer.
    pub fn new(id: impl Into<String>, category: impl Into<String>, prompt: impl Into<String>, reference: impl Into<String>, rubric: Arc<Rubric>) -> Self {
        let (prompt, reference) = (prompt.into(), reference.into());
        let id = id.into();
        let source = SourceRef { file: PathBuf::from("<code>"), line: 0 };
        let messages = vec![Message::user(prompt)];
        let mut full = messages.clone();
        full.push(Message::assistant(reference.clone()));
        let example = Example { source: source.clone(), messages: full, id: Some(id.clone()), record: Default::default() };
        Self { id, category: category.into(), messages, reference, input: String::new(), tags: Vec::new(), keywords: Vec::new(), rubric, source, example }
    }

    /// The prompt as plain text (the user turns joined), for reports and matching.
    pub fn prompt_text(&self) -> String {
        self.messages.iter().filter(|m| m.role != Role::System).map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// Hash of a prompt after [`normalize_text`]: how training overlap is detected.
pub fn prompt_key(example: &Example) -> String {
    hashing::sha256_bytes(normalize_text(&example.prompt_text()).as_bytes())
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: String,
    #[serde(default)]
    description: String,
    rubric: Option<PathBuf>,
    system: Option<String>,
    train: Option<PathBuf>,
    #[serde(default)]
    include: Vec<PathBuf>,
    #[serde(default)]
    sets: Vec<SetFile>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    category: String,
    cases: PathBuf,
    rubric: Option<PathBuf>,
    limit: Option<usize>,
}

/// A loaded suite: cases with their rubrics, and hashes of everything read.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Name from the file.
    pub name: String,
    /// Description from the file.
    pub description: String,
    /// The suite file.
    pub path: PathBuf,
    /// All cases, in file order (included suites' cases after the suite's own).
    pub cases: Vec<Case>,
    /// Every file read (suite, case and rubric files) with its SHA-256.
    pub files: BTreeMap<PathBuf, String>,
    /// One hash over all of `files`.
    pub hash: String,
}

impl Suite {
    /// Loads a suite file, its case files, rubrics and included suites.
    pub fn load(path: &Path) -> Result<Self, SuiteError> {
        let mut loader = Loader::default();
        let (name, description) = loader.load(path, 0)?;
        let Loader { cases, files, .. } = loader;
        check_unique_ids(&cases)?;
        Ok(Self { name, description, path: path.to_path_buf(), cases, hash: files_hash(&files), files })
    }

    /// Case counts per category, in first-seen order.
    pub fn category_counts(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for c in &self.cases {
            match out.iter_mut().find(|(k, _)| *k == c.category) {
                Some((_, n)) => *n += 1,
                None => out.push((c.category.clone(), 1)),
            }
        }
        out
    }

    /// The distinct rubrics used.
    pub fn rubrics(&self) -> Vec<Arc<Rubric>> {
        let mut out: Vec<Arc<Rubric>> = Vec::new();
        for c in &self.cases {
            if !out.iter().any(|r| Arc::ptr_eq(r, &c.rubric)) {
                out.push(c.rubric.clone());
            }
        }
        out
    }
}

/// One hash over every file a suite read (paths and contents).
fn files_hash(files: &BTreeMap<PathBuf, String>) -> String {
    let all: String = files.iter().map(|(p, h)| format!("{}={h}\n", p.display())).collect();
    hashing::sha256_bytes(all.as_bytes())
}

#[derive(Default)]
struct Loader {
    cases: Vec<Case>,
    files: BTreeMap<PathBuf, String>,
    rubrics: HashMap<PathBuf, Arc<Rubric>>,
}

impl Loader {
    fn read(&mut self, path: &Path) -> Result<String, SuiteError> {
        let bytes = std::fs::read(path).map_err(|source| SuiteError::Io { path: path.to_path_buf(), source })?;
        self.files.insert(path.to_path_buf(), hashing::sha256_bytes(&bytes));
        String::from_utf8(bytes).map_err(|e| SuiteError::Invalid { path: path.to_path_buf(), message: format!("not UTF-8 ({e})") })
    }

    fn rubric(&mut self, path: &Path) -> Result<Arc<Rubric>, SuiteError> {
        if let Some(r) = self.rubrics.get(path) {
            return Ok(r.clone());
        }
        let r = Arc::new(Rubric::load(path)?);
        self.files.insert(path.to_path_buf(), r.hash.clone());
        self.rubrics.insert(path.to_path_buf(), r.clone());
        Ok(r)
    }

    fn load(&mut self, path: &Path, depth: usize) -> Result<(String, String), SuiteError> {
        let invalid = |message: String| SuiteError::Invalid { path: path.to_path_buf(), message };
        if depth > 8 {
            return Err(invalid("suites include each other too deeply (a cycle?)".into()));
        }
        let text = self.read(path)?;
        let file: SuiteFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let training = match &file.train {
            Some(t) => Some(TrainingPrompts::load(&dir.join(t), self)?),
            None => None,
        };
        if file.sets.is_empty() && file.include.is_empty() {
            return Err(invalid("no [[sets]] and no `include`".into()));
        }
        for (i, set) in file.sets.iter().enumerate() {
            let rubric_path = set.rubric.as_ref().or(file.rubric.as_ref()).ok_or_else(|| invalid(format!("set #{} ({}) has no rubric and the suite names none", i + 1, set.cases.display())))?;
            let rubric = self.rubric(&dir.join(rubric_path))?;
            let cases_path = dir.join(&set.cases);
            if set.category.trim().is_empty() {
                return Err(invalid(format!("set #{} has an empty category", i + 1)));
            }
            self.load_set(&cases_path, set, rubric, file.system.as_deref(), training.as_ref())?;
        }
        for inc in &file.include {
            self.load(&dir.join(inc), depth + 1)?;
        }
        Ok((file.name, file.description))
    }

    fn load_set(&mut self, path: &Path, set: &SetFile, rubric: Arc<Rubric>, system: Option<&str>, training: Option<&TrainingPrompts>) -> Result<(), SuiteError> {
        let data = Dataset::load(path).map_err(|e| SuiteError::Cases { path: path.to_path_buf(), issues: e.to_string() })?;
        self.files.insert(path.to_path_buf(), data.sha256.clone());
        if !data.issues.is_empty() {
            let issues = data.issues.iter().take(5).map(|i| i.to_string()).collect::<Vec<_>>().join("; ");
            return Err(SuiteError::Cases { path: path.to_path_buf(), issues: format!("{} unusable record(s): {issues}", data.issues.len()) });
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "case".into());
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut leaks = Vec::new();
        for ex in data.examples.into_iter().take(set.limit.unwrap_or(usize::MAX)) {
            let in_training = training.is_some_and(|t| t.contains(&ex));
            let category = match set.category.as_str() {
                "auto" if in_training => "seen".to_string(),
                "auto" => "heldout".to_string(),
                "heldout" if in_training => {
                    leaks.push(ex.source.to_string());
                    continue;
                }
                other => other.to_string(),
            };
            let rubric = match ex.record.get("rubric").and_then(|v| v.as_str()) {
                Some(r) => self.rubric(&dir.join(r))?,
                None => rubric.clone(),
            };
            self.cases.push(case_from_example(ex, category, rubric, system, &stem)?);
        }
        if !leaks.is_empty() {
            let train = training.map(|t| t.path.clone()).unwrap_or_default();
            return Err(SuiteError::Leak { count: leaks.len(), train, examples: leaks.iter().take(5).cloned().collect::<Vec<_>>().join(", ") });
        }
        Ok(())
    }
}

fn string_list(record: &serde_json::Map<String, serde_json::Value>, key: &str, source: &SourceRef) -> Result<Vec<String>, SuiteError> {
    match record.get(key) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SuiteError::Cases { path: source.file.clone(), issues: format!("line {}: `{key}` must be a list of strings", source.line) }),
        Some(_) => Err(SuiteError::Cases { path: source.file.clone(), issues: format!("line {}: `{key}` must be a list of strings", source.line) }),
    }
}

fn case_from_example(mut ex: Example, category: String, rubric: Arc<Rubric>, system: Option<&str>, stem: &str) -> Result<Case, SuiteError> {
    let tags = string_list(&ex.record, "tags", &ex.source)?;
    let keywords = string_list(&ex.record, "keywords", &ex.source)?;
    let id = ex.id.clone().unwrap_or_else(|| format!("{stem}-{}", ex.source.line));
    let input = ex.record.get("input").and_then(|v| v.as_str()).unwrap_or("").to_string();
    if let Some(system) = system {
        if ex.messages.first().is_none_or(|m| m.role != Role::System) {
            ex.messages.insert(0, Message::system(system));
        }
    }
    let reference = ex.response_text().to_string();
    let mut messages = ex.messages.clone();
    if messages.last().is_some_and(|m| m.role == Role::Assistant) {
        messages.pop();
    }
    Ok(Case { id, category, messages, reference, input, tags, keywords, rubric, source: ex.source.clone(), example: ex })
}

fn check_unique_ids(cases: &[Case]) -> Result<(), SuiteError> {
    let mut seen: HashMap<&str, &SourceRef> = HashMap::new();
    for c in cases {
        if let Some(first) = seen.insert(&c.id, &c.source) {
            return Err(SuiteError::DuplicateId { id: c.id.clone(), first: first.clone(), second: c.source.clone() });
        }
    }
    Ok(())
}

/// The normalized-prompt hashes of a training file.
struct TrainingPrompts {
    path: PathBuf,
    keys: HashSet<String>,
}

impl TrainingPrompts {
    fn load(path: &Path, loader: &mut Loader) -> Result<Self, SuiteError> {
        let data = Dataset::load(path).map_err(|e| SuiteError::Cases { path: path.to_path_buf(), issues: e.to_string() })?;
        loader.files.insert(path.to_path_buf(), data.sha256.clone());
        Ok(Self { path: path.to_path_buf(), keys: data.examples.iter().map(prompt_key).collect() })
    }

    fn contains(&self, ex: &Example) -> bool {
        self.keys.contains(&prompt_key(ex))
    }
}

/// What `tunelab eval suite new` writes: a suite TOML for a training split.
#[derive(Debug, Clone)]
pub struct NewSuite {
    /// Suite name.
    pub name: String,
    /// The training file (its cases become `seen`; others are checked against it).
    pub train: PathBuf,
    /// Held-out cases (an error if any appears in training).
    pub heldout: Option<PathBuf>,
    /// Out-of-domain cases.
    pub ood: Option<PathBuf>,
    /// Further case files sorted into seen / heldout case by case.
    pub auto: Vec<PathBuf>,
    /// Rubric for in-domain sets.
    pub rubric: PathBuf,
    /// Include the shipped guard suite (path to its suite.toml).
    pub guard: Option<PathBuf>,
    /// Seen cases to evaluate (the first N of the training file).
    pub seen_limit: Option<usize>,
}

/// Writes a suite file at `dest` (paths made relative to its folder), then loads it, so
/// leaks and bad files are reported at once. Returns the loaded suite.
pub fn new_suite(spec: &NewSuite, dest: &Path) -> Result<Suite, SuiteError> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let rel = |p: &Path| relative_to(p, dir);
    let mut sets = vec![SetFile { category: "seen".into(), cases: rel(&spec.train), rubric: None, limit: spec.seen_limit }];
    if let Some(h) = &spec.heldout {
        sets.push(SetFile { category: "heldout".into(), cases: rel(h), rubric: None, limit: None });
    }
    for a in &spec.auto {
        sets.push(SetFile { category: "auto".into(), cases: rel(a), rubric: None, limit: None });
    }
    if let Some(o) = &spec.ood {
        sets.push(SetFile { category: "ood".into(), cases: rel(o), rubric: None, limit: None });
    }
    let file = SuiteFile {
        name: spec.name.clone(),
        description: format!("Built by `tunelab eval suite new` from {}", spec.train.display()),
        rubric: Some(rel(&spec.rubric)),
        system: None,
        train: Some(rel(&spec.train)),
        include: spec.guard.iter().map(|g| rel(g)).collect(),
        sets,
    };
    let text = toml::to_string_pretty(&file).map_err(|e| SuiteError::Invalid { path: dest.to_path_buf(), message: e.to_string() })?;
    // Validate before writing: load from a temporary file next to the destination (so the
    // relative paths hold), then move it into place.
    let tmp = dir.join(format!(".{}.tmp", dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    std::fs::write(&tmp, &text).map_err(|source| SuiteError::Io { path: tmp.clone(), source })?;
    let mut suite = match Suite::load(&tmp) {
        Ok(suite) => suite,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, dest).map_err(|source| SuiteError::Io { path: dest.to_path_buf(), source })?;
    if let Some(hash) = suite.files.remove(&tmp) {
        suite.files.insert(dest.to_path_buf(), hash);
    }
    suite.path = dest.to_path_buf();
    suite.hash = files_hash(&suite.files);
    Ok(suite)
}

/// `path` relative to `dir` when both are (or can be made) absolute; else `path` as given.
fn relative_to(path: &Path, dir: &Path) -> PathBuf {
    let (Ok(p), Ok(d)) = (std::path::absolute(path), std::path::absolute(dir)) else { return path.to_path_buf() };
    let (pc, dc): (Vec<_>, Vec<_>) = (p.components().collect(), d.components().collect());
    let common = pc.iter().zip(&dc).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return p;
    }
    let mut out = PathBuf::new();
    for _ in common..dc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c);
    }
    out
}
