//! Creating a study from stored runs: the items (cases every run answered), the tasks (an
//! item and a pair of systems to compare), and the key that maps opaque system ids back to
//! runs, kept in its own file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::leak::{identity_words, mentioned_identity};
use super::token;
use crate::error::{Error, Result};
use crate::run::store::read_run;
use crate::run::summary::{floats, strings};

/// The study's served content.
pub const STUDY_FILE: &str = "study.json";
/// The mapping from opaque system ids to runs.
pub const KEY_FILE: &str = "key.json";
/// Reviewers and votes.
pub const DB_FILE: &str = "review.db";
/// Layout version of `study.json` and `key.json` written by this build.
pub const STUDY_SCHEMA_VERSION: u32 = 1;
/// Largest `study.json` / `key.json` read back.
const MAX_STUDY_BYTES: u64 = 256 << 20;

/// What `tunelab review new` asks for.
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// The run directories compared (two or more).
    pub runs: Vec<PathBuf>,
    /// Only cases of these categories (all when empty).
    pub categories: Vec<String>,
    /// At most this many items, drawn at random with `seed`.
    pub sample: Option<usize>,
    /// Seed for sampling, the task order and the sides shown.
    pub seed: u64,
    /// Reviewers who judge each task.
    pub reviewers_per_item: usize,
    /// Whether reviewers see the reference answer.
    pub show_reference: bool,
    /// Extra identity words (besides run, model and adapter names).
    pub identity_words: Vec<String>,
}

/// One case as shown to reviewers, with each system's answer under its opaque id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The suite's case id (never served).
    pub case_id: String,
    /// The case's category (`seen`, `heldout`, `guard` …).
    pub category: String,
    /// The prompt.
    pub prompt: String,
    /// The reference answer (served only when the study shows references).
    pub reference: String,
    /// Answer per system index.
    pub answers: Vec<String>,
    /// The mean LLM-judge score per system index, where the run has judge checks.
    #[serde(default)]
    pub judge_scores: Vec<Option<f64>>,
}

/// One judgement to make: an item and two systems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Opaque, random id (what reviewers' requests name).
    pub id: String,
    /// Index into [`Study::items`].
    pub item: usize,
    /// The two system indices, in canonical order (`pair[0] < pair[1]`).
    pub pair: [usize; 2],
}

/// An item left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excluded {
    /// The case id.
    pub case_id: String,
    /// Why it was left out.
    pub reason: String,
}

/// `study.json`: everything the service serves from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// [`STUDY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The study's name (its directory's name).
    pub name: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Opaque system ids, one per run.
    pub systems: Vec<String>,
    /// The items.
    pub items: Vec<Item>,
    /// The tasks, in creation order.
    pub tasks: Vec<Task>,
    /// Reviewers who judge each task.
    pub reviewers_per_item: usize,
    /// Whether reviewers see the reference.
    pub show_reference: bool,
    /// Seed of the per-reviewer task order and sides (secret: it is never served).
    pub seed: u64,
    /// How many items were left out (the reasons, which name runs, are in the key).
    pub excluded: usize,
}

/// One system's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemIdentity {
    /// The opaque id.
    pub id: String,
    /// The run's name.
    pub run: String,
    /// The run directory.
    pub run_dir: String,
    /// The model the run evaluated.
    pub model: String,
    /// Its adapter, if any.
    pub adapter: Option<String>,
}

/// `key.json`: which run each opaque system id stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyKey {
    /// [`STUDY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// One entry per system, in the study's system order.
    pub systems: Vec<SystemIdentity>,
    /// Items left out (identity leaks, empty answers), with the reasons.
    pub excluded: Vec<Excluded>,
}

impl Study {
    /// Reads `DIR/study.json`, checking that its tasks, items and systems refer to each
    /// other consistently (the file may have been edited or written by someone else).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(STUDY_FILE);
        let study: Self = read_json(&path, "study")?;
        study.check().map_err(|why| Error::Invalid(format!("{}: {why}", path.display())))?;
        Ok(study)
    }

    /// The first inconsistency between tasks, items and systems, if any.
    fn check(&self) -> std::result::Result<(), String> {
        let systems = self.systems.len();
        if systems < 2 {
            return Err(format!("{systems} systems; a study compares two or more"));
        }
        if self.reviewers_per_item == 0 {
            return Err("reviewers_per_item is 0".into());
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.answers.len() != systems {
                return Err(format!("item {i} ({}) has {} answers for {systems} systems", item.case_id, item.answers.len()));
            }
            if !item.judge_scores.is_empty() && item.judge_scores.len() != systems {
                return Err(format!("item {i} ({}) has {} judge scores for {systems} systems", item.case_id, item.judge_scores.len()));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, task) in self.tasks.iter().enumerate() {
            if task.item >= self.items.len() {
                return Err(format!("task {i} ({}) names item {} of {}", task.id, task.item, self.items.len()));
            }
            if !(task.pair[0] < task.pair[1] && task.pair[1] < systems) {
                return Err(format!("task {i} ({}) pairs systems {:?}; expected two of 0..{systems} in increasing order", task.id, task.pair));
            }
            if !ids.insert(task.id.as_str()) {
                return Err(format!("task id {} appears twice", task.id));
            }
        }
        Ok(())
    }

    /// Task index by opaque id.
    pub fn task_index(&self) -> HashMap<&str, usize> {
        self.tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect()
    }
}

impl StudyKey {
    /// Reads `DIR/key.json`, which must name one run per system of `study`.
    pub fn read(dir: &Path, study: &Study) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        let key: Self = read_json(&path, "study key")?;
        if key.systems.len() != study.systems.len() || key.systems.iter().zip(&study.systems).any(|(k, s)| k.id != *s) {
            return Err(Error::Invalid(format!(
                "{}: its systems ({}) are not the study's ({})",
                path.display(),
                key.systems.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", "),
                study.systems.join(", ")
            )));
        }
        Ok(key)
    }
}

fn read_json<T: serde::de::DeserializeOwned + HasVersion>(path: &Path, what: &str) -> Result<T> {
    let bytes = tunelab::fsutil::read_bounded(path, MAX_STUDY_BYTES)?;
    let value: T = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: not a tunelab {what} file: {e}", path.display())))?;
    if value.version() > STUDY_SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "{} has schema_version {}; this tunelab reads versions up to {STUDY_SCHEMA_VERSION} (upgrade tunelab to read it)",
            path.display(),
            value.version()
        )));
    }
    Ok(value)
}

trait HasVersion {
    fn version(&self) -> u32;
}
impl HasVersion for Study {
    fn version(&self) -> u32 {
        self.schema_version
    }
}
impl HasVersion for StudyKey {
    fn version(&self) -> u32 {
        self.schema_version
    }
}

/// One run's answers by case id.
struct RunCases {
    name: String,
    model: String,
    adapter: Option<String>,
    cases: BTreeMap<String, CaseRow>,
    order: Vec<String>,
}

struct CaseRow {
    category: String,
    prompt: String,
    reference: String,
    output: String,
    judge_scores: Vec<f64>,
}

fn read_run_cases(dir: &Path) -> Result<RunCases> {
    let (record, df) = read_run(dir)?;
    let table = |source| Error::Table { path: dir.join(crate::run::store::RESULTS_FILE), source };
    let column = |name: &str| strings(&df, name).map_err(table);
    let (ids, categories, prompts, references, outputs, scorers) =
        (column("case_id")?, column("category")?, column("prompt")?, column("reference")?, column("output")?, column("scorer")?);
    let scores = floats(&df, "score").map_err(table)?;
    let mut cases: BTreeMap<String, CaseRow> = BTreeMap::new();
    let mut order = Vec::new();
    for i in 0..ids.len() {
        let row = cases.entry(ids[i].clone()).or_insert_with(|| {
            order.push(ids[i].clone());
            CaseRow {
                category: categories[i].clone(),
                prompt: prompts[i].clone(),
                reference: references[i].clone(),
                output: outputs[i].clone(),
                judge_scores: vec![],
            }
        });
        if row.output != outputs[i] || row.prompt != prompts[i] {
            return Err(Error::Invalid(format!("{}: case {} has different outputs on different rows", dir.display(), ids[i])));
        }
        if scorers[i] == "judge" && scores[i].is_finite() {
            row.judge_scores.push(scores[i]);
        }
    }
    Ok(RunCases { name: record.name, model: record.backend.model, adapter: record.backend.adapter, cases, order })
}

/// A fresh opaque id: `prefix` and 16 random hex digits.
fn opaque(prefix: &str) -> String {
    format!("{prefix}{}", &token::new_token()[..16])
}

/// Builds the study and its key (nothing written). The items are the cases every run
/// answered (same prompt in each), optionally filtered by category and sampled; items whose
/// answers name a run, model or adapter, or are empty, are left out and listed.
pub fn build_study(name: &str, opts: &StudyOptions, created_at: &str) -> Result<(Study, StudyKey)> {
    if opts.runs.len() < 2 {
        return Err(Error::Invalid("a study compares at least two runs (give --runs RUN_A RUN_B …)".into()));
    }
    if opts.reviewers_per_item == 0 {
        return Err(Error::Invalid("--reviewers-per-item must be at least 1".into()));
    }
    let runs: Vec<RunCases> = opts.runs.iter().map(|d| read_run_cases(d)).collect::<Result<_>>()?;
    for (i, a) in runs.iter().enumerate() {
        if let Some(b) = runs[..i].iter().find(|b| b.name == a.name) {
            return Err(Error::Invalid(format!("two runs are named {} ({} and {}); a study needs distinct runs", a.name, b.name, opts.runs[i].display())));
        }
    }
    let words = identity_words(
        &runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        &runs.iter().map(|r| r.model.clone()).collect::<Vec<_>>(),
        &runs.iter().filter_map(|r| r.adapter.clone()).collect::<Vec<_>>(),
        &opts.identity_words,
    );
    let mut items = Vec::new();
    let mut excluded = Vec::new();
    for case_id in &runs[0].order {
        let rows: Option<Vec<&CaseRow>> = runs.iter().map(|r| r.cases.get(case_id)).collect();
        let Some(rows) = rows else { continue };
        let first = rows[0];
        if !opts.categories.is_empty() && !opts.categories.contains(&first.category) {
            continue;
        }
        if rows.iter().any(|r| r.prompt != first.prompt) {
            return Err(Error::Invalid(format!("case {case_id} has different prompts in the runs; were they run on the same suite?")));
        }
        let reason = rows.iter().zip(&runs).find_map(|(r, run)| {
            if r.output.trim().is_empty() {
                return Some(format!("an empty answer (run {})", run.name));
            }
            mentioned_identity(&r.output, &words).map(|w| format!("an answer names `{w}` (run {})", run.name))
        });
        if let Some(reason) = reason {
            excluded.push(Excluded { case_id: case_id.clone(), reason });
            continue;
        }
        items.push(Item {
            case_id: case_id.clone(),
            category: first.category.clone(),
            prompt: first.prompt.clone(),
            reference: first.reference.clone(),
            answers: rows.iter().map(|r| r.output.clone()).collect(),
            judge_scores: rows.iter().map(|r| (!r.judge_scores.is_empty()).then(|| r.judge_scores.iter().sum::<f64>() / r.judge_scores.len() as f64)).collect(),
        });
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    if let Some(n) = opts.sample {
        let mut chosen: Vec<usize> = (0..items.len()).collect();
        chosen.shuffle(&mut rng);
        chosen.truncate(n);
        chosen.sort_unstable();
        items = chosen.into_iter().map(|i| items[i].clone()).collect();
    }
    if items.is_empty() {
        return Err(Error::Invalid(format!("the runs share no reviewable case ({} left out for identity leaks or empty answers)", excluded.len())));
    }
    // Every pair of systems; with more than two systems each item gets one pair, in turn,
    // over a shuffled item order, so each pair is covered as evenly as the items allow.
    let n = runs.len();
    let pairs: Vec<[usize; 2]> = (0..n).flat_map(|a| (a + 1..n).map(move |b| [a, b])).collect();
    if items.len() < pairs.len() {
        return Err(Error::Invalid(format!("{} runs make {} pairs but only {} items are reviewable; every pair needs an item", n, pairs.len(), items.len())));
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut rng);
    let mut tasks: Vec<Task> = order.iter().enumerate().map(|(k, &item)| Task { id: opaque("t"), item, pair: pairs[k % pairs.len()] }).collect();
    tasks.sort_by_key(|t| t.item);
    let systems: Vec<String> = (0..n).map(|_| opaque("s")).collect();
    let study = Study {
        schema_version: STUDY_SCHEMA_VERSION,
        name: name.to_string(),
        created_at: created_at.to_string(),
        systems: systems.clone(),
        items,
        tasks,
        reviewers_per_item: opts.reviewers_per_item,
        show_reference: opts.show_reference,
        seed: rand::random(),
        excluded: excluded.len(),
    };
    let key = StudyKey {
        schema_version: STUDY_SCHEMA_VERSION,
        systems: systems
            .into_iter()
            .zip(runs.iter().zip(&opts.runs))
            .map(|(id, (r, dir))| SystemIdentity {
                id,
                run: r.name.clone(),
                run_dir: dir.display().to_string(),
                model: r.model.clone(),
                adapter: r.adapter.clone(),
            })
            .collect(),
        excluded,
    };
    Ok((study, key))
}

/// Creates the study directory `out`: `study.json`, `key.json` (readable by its owner only)
/// and an empty `review.db`. Refuses an existing directory.
pub fn create_study(out: &Path, opts: &StudyOptions) -> Result<(Study, StudyKey)> {
    if out.exists() {
        return Err(Error::Invalid(format!("{} already exists; pick a new study directory", out.display())));
    }
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Invalid(format!("{} has no usable folder name", out.display())))?;
    let (study, key) = build_study(name, opts, &crate::run::now_utc().1)?;
    // The folder is the owner's alone: it holds the key (which system is which run) and
    // review.db (token hashes, votes), and no file in it is ever readable by others, not
    // even the key's temporary file before its mode is set.
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(out).map_err(|e| Error::io("creating", out, e))?;
    }
    tunelab::fsutil::create_dir_all(out)?;
    tunelab::fsutil::write_json_atomic(&out.join(KEY_FILE), &key)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = out.join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io("restricting", path, e))?;
    }
    tunelab::fsutil::write_json_atomic(&out.join(STUDY_FILE), &study)?;
    super::store::Store::create(out)?;
    Ok((study, key))
}
