//! Suites: a TOML file naming case sets (JSONL, Alpaca/ShareGPT/OpenAI records read by
//! tunelab's dataset loader), each with a category and a rubric: the suite is where cases
//! meet the rubric that scores them. A suite may name its training file (`train = "…"`):
//! cases whose normalized prompt appears in it are `seen`, a `heldout` case found there is
//! an error (a leak), and sets with `category = "auto"` are sorted into `seen` / `heldout`
//! case by case.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tunelab::data::{normalize_text, Dataset, Example, SourceRef};
use tunelab::{Message, Role};

use crate::case::Case;
use crate::error::{Error, Result};
use crate::hashing;
use crate::rubric::Rubric;
use crate::scorers::registry::Registry;

/// The categories the method names; others are allowed.
pub const CATEGORIES: [&str; 4] = ["seen", "heldout", "ood", "guard"];

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
    /// Every rubric loaded, each once.
    pub rubrics: Vec<Arc<Rubric>>,
    /// For each case (same order as `cases`), the index in `rubrics` of the rubric that
    /// scores it.
    pub case_rubric: Vec<usize>,
    /// Every file read (suite, case and rubric files) with its SHA-256.
    pub files: BTreeMap<PathBuf, String>,
    /// One hash over all of `files`.
    pub hash: String,
}

/// A case with the rubric that scores it.
#[derive(Debug, Clone, Copy)]
pub struct ScoredCase<'a> {
    /// The case.
    pub case: &'a Case,
    /// Its rubric.
    pub rubric: &'a Rubric,
}

impl Suite {
    /// Loads a suite file, its case files, rubrics and included suites, with the built-in
    /// scorers.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &Registry::default())
    }

    /// Loads a suite whose rubrics may name the scorers in `registry`.
    pub fn load_with(path: &Path, registry: &Registry) -> Result<Self> {
        let mut loader = Loader::new(registry);
        let (name, description) = loader.load(path, 0)?;
        let Loader { cases, case_rubric, rubrics, files, .. } = loader;
        check_unique_ids(&cases)?;
        Ok(Self { name, description, path: path.to_path_buf(), cases, rubrics, case_rubric, hash: files_hash(&files), files })
    }

    /// Each case with its rubric, in suite order.
    pub fn scored_cases(&self) -> impl Iterator<Item = ScoredCase<'_>> {
        self.cases.iter().zip(&self.case_rubric).map(|(case, &r)| ScoredCase { case, rubric: &self.rubrics[r] })
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

    /// The rubrics that score at least one case, in first-use order.
    pub fn used_rubrics(&self) -> Vec<&Rubric> {
        let mut seen = vec![false; self.rubrics.len()];
        let mut out = Vec::new();
        for &r in &self.case_rubric {
            if !std::mem::replace(&mut seen[r], true) {
                out.push(self.rubrics[r].as_ref());
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

struct Loader<'r> {
    registry: &'r Registry,
    cases: Vec<Case>,
    case_rubric: Vec<usize>,
    files: BTreeMap<PathBuf, String>,
    rubrics: Vec<Arc<Rubric>>,
    rubric_index: HashMap<PathBuf, usize>,
}

impl<'r> Loader<'r> {
    fn new(registry: &'r Registry) -> Self {
        Self { registry, cases: Vec::new(), case_rubric: Vec::new(), files: BTreeMap::new(), rubrics: Vec::new(), rubric_index: HashMap::new() }
    }

    fn read(&mut self, path: &Path) -> Result<String> {
        let bytes = tunelab::fsutil::read_input(path)?;
        self.files.insert(path.to_path_buf(), hashing::sha256_bytes(&bytes));
        String::from_utf8(bytes).map_err(|e| Error::Suite { path: path.to_path_buf(), message: format!("not UTF-8 ({e})") })
    }

    /// The index of the rubric at `path`, loaded on first use.
    fn rubric(&mut self, path: &Path) -> Result<usize> {
        if let Some(&i) = self.rubric_index.get(path) {
            return Ok(i);
        }
        let r = Rubric::load_with(path, self.registry)?;
        self.files.insert(path.to_path_buf(), r.hash.clone());
        self.rubrics.push(Arc::new(r));
        self.rubric_index.insert(path.to_path_buf(), self.rubrics.len() - 1);
        Ok(self.rubrics.len() - 1)
    }

    fn load(&mut self, path: &Path, depth: usize) -> Result<(String, String)> {
        let invalid = |message: String| Error::Suite { path: path.to_path_buf(), message };
        if depth > 8 {
            return Err(invalid("suites include each other too deeply (a cycle?)".into()));
        }
        let text = self.read(path)?;
        let file: SuiteFile = toml::from_str(&text).map_err(|e| invalid(crate::rubric::toml_error(&text, &e)))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let training = match &file.train {
            Some(t) => Some(TrainingPrompts::load(&dir.join(t), self)?),
            None => None,
        };
        if file.sets.is_empty() && file.include.is_empty() {
            return Err(invalid("no [[sets]] and no `include`".into()));
        }
        for (i, set) in file.sets.iter().enumerate() {
            let rubric_path = set
                .rubric
                .as_ref()
                .or(file.rubric.as_ref())
                .ok_or_else(|| invalid(format!("set #{} ({}) has no rubric and the suite names none", i + 1, set.cases.display())))?;
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

    fn load_set(&mut self, path: &Path, set: &SetFile, rubric: usize, system: Option<&str>, training: Option<&TrainingPrompts>) -> Result<()> {
        let data = Dataset::load(path).map_err(|e| Error::Records { path: path.to_path_buf(), line: None, message: e.to_string() })?;
        self.files.insert(path.to_path_buf(), data.sha256.clone());
        if !data.issues.is_empty() {
            let issues = data.issues.iter().take(5).map(|i| i.to_string()).collect::<Vec<_>>().join("; ");
            return Err(Error::Records { path: path.to_path_buf(), line: None, message: format!("{} unusable record(s): {issues}", data.issues.len()) });
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "case".into());
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut leaks = Vec::new();
        let before = self.cases.len();
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
                Some(r) => self.rubric(&dir.join(r)).map_err(|e| Error::Records {
                    path: ex.source.file.clone(),
                    line: Some(ex.source.line),
                    message: format!("the case's rubric {r:?}: {e}"),
                })?,
                None => rubric,
            };
            self.cases.push(case_from_example(ex, category, system, &stem)?);
            self.case_rubric.push(rubric);
        }
        if !leaks.is_empty() {
            let train = training.map(|t| t.path.clone()).unwrap_or_default();
            return Err(Error::Leak { count: leaks.len(), train, examples: leaks.iter().take(5).cloned().collect::<Vec<_>>().join(", ") });
        }
        if self.cases.len() == before {
            let why = if set.limit == Some(0) { "its limit is 0" } else { "the file holds no records" };
            return Err(Error::Records { path: path.to_path_buf(), line: None, message: format!("this `{}` set selects no cases ({why})", set.category) });
        }
        Ok(())
    }
}

fn string_list(record: &serde_json::Map<String, serde_json::Value>, key: &str, source: &SourceRef) -> Result<Vec<String>> {
    let wrong = || Error::Invalid(format!("{source}: `{key}` must be a list of strings"));
    match record.get(key) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(wrong),
        Some(_) => Err(wrong()),
    }
}

fn case_from_example(mut ex: Example, category: String, system: Option<&str>, stem: &str) -> Result<Case> {
    let tags = string_list(&ex.record, "tags", &ex.source)?;
    let keywords = string_list(&ex.record, "keywords", &ex.source)?;
    let id = ex.id.clone().unwrap_or_else(|| format!("{stem}-{}", ex.source.position()));
    let fields = ex.record.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
    if let Some(system) = system {
        if ex.messages.first().is_none_or(|m| m.role != Role::System) {
            ex.messages.insert(0, Message::system(system));
        }
    }
    let reference = ex.response_text().to_string();
    let asked = ex.prompt_messages().len();
    let mut messages = ex.messages;
    messages.truncate(asked);
    Ok(Case { id, category, messages, reference, tags, keywords, fields, source: ex.source })
}

fn check_unique_ids(cases: &[Case]) -> Result<()> {
    let mut seen: HashMap<&str, &SourceRef> = HashMap::new();
    for c in cases {
        if let Some(first) = seen.insert(&c.id, &c.source) {
            return Err(Error::DuplicateId { id: c.id.clone(), first: Box::new(first.clone()), second: Box::new(c.source.clone()) });
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
    fn load(path: &Path, loader: &mut Loader<'_>) -> Result<Self> {
        let data = Dataset::load(path).map_err(|e| Error::Records { path: path.to_path_buf(), line: None, message: e.to_string() })?;
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
pub fn new_suite(spec: &NewSuite, dest: &Path) -> Result<Suite> {
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
    let text = toml::to_string_pretty(&file).map_err(|e| Error::Suite { path: dest.to_path_buf(), message: e.to_string() })?;
    // Validate before writing: load from a temporary file next to the destination (so the
    // relative paths hold), then move it into place.
    let tmp = dir.join(format!(".{}.tmp", dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    tunelab::fsutil::write_synced(&tmp, text.as_bytes()).map_err(|e| Error::io("writing", &tmp, e))?;
    let mut suite = match Suite::load(&tmp) {
        Ok(suite) => suite,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, dest).map_err(|e| Error::io("moving into place", dest, e))?;
    tunelab::fsutil::sync_dir(dir)?;
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
