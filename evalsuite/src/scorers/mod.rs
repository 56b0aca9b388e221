//! Scorers: what a rubric's checks apply to a model's outputs. Every scorer implements
//! [`Scorer`]: a name, a direction, a default threshold and a batch `score` that receives a
//! [`ScoreContext`] (the evaluated model for perplexity, loaded embedding models, judge
//! clients), so text scorers and model scorers share one path. [`registry::Registry`] maps
//! a rubric's `scorer = "…"` to an implementation; adding a scorer is one file plus one
//! registry line.
//!
//! Text scorers: [`text`], [`structure`], [`overlap`] (ROUGE, BLEU). Model scorers:
//! [`embedding`] (all-MiniLM-L6-v2 in candle), [`perplexity`] (the evaluated model) and
//! [`judge`] (an OpenAI-compatible endpoint).

pub mod embedding;
pub mod judge;
pub mod overlap;
pub mod perplexity;
pub mod registry;
pub mod structure;
pub mod text;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::de::DeserializeOwned;

use crate::case::Case;
use crate::chat::{base_url, ChatClient, HttpConfig};
use crate::error::Result;
use embedding::Embedder;

/// Whether a higher or a lower value is better (decides how the threshold is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Pass when value ≥ threshold.
    HigherIsBetter,
    /// Pass when value ≤ threshold.
    LowerIsBetter,
}

/// One check's result on one output.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The raw value (e.g. F1, fraction, cosine, perplexity); NaN when it could not be
    /// computed (then `detail` says why).
    pub value: f64,
    /// A short explanation for reports (what was missing, which line was cited …).
    pub detail: String,
}

impl Value {
    /// A value without explanation.
    pub fn of(value: f64) -> Self {
        Self { value, detail: String::new() }
    }

    /// A value with an explanation.
    pub fn with(value: f64, detail: impl Into<String>) -> Self {
        Self { value, detail: detail.into() }
    }

    /// No value: the scorer could not compute one, for the reason given.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self { value: f64::NAN, detail: reason.into() }
    }
}

/// One output to score, with its case.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The case (prompt, reference, metadata).
    pub case: &'a Case,
    /// The model's output.
    pub output: &'a str,
}

/// A scorer: a rubric check's way of turning outputs into values.
pub trait Scorer: Send + Sync + fmt::Debug {
    /// The name rubrics use (`scorer = "…"`), recorded in results.
    fn kind(&self) -> &'static str;

    /// Which way the threshold points.
    fn direction(&self) -> Direction {
        Direction::HigherIsBetter
    }

    /// The threshold used when a check gives none.
    fn default_threshold(&self) -> f64 {
        1.0
    }

    /// The values a threshold may take (a rubric's threshold outside them is refused): by
    /// default 0–1, the range of every bounded scorer.
    fn threshold_range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }

    /// The value's contribution to the case score (0–1): by default the value itself,
    /// clamped; scorers with unbounded values use pass/fail.
    fn contribution(&self, value: f64, _passed: bool) -> f64 {
        value.clamp(0.0, 1.0)
    }

    /// Loads or checks what the scorer needs (a model, an endpoint's key) before any output
    /// is generated, so a run fails at once rather than after generating every case.
    fn prepare(&self, _ctx: &ScoreContext<'_>) -> Result<()> {
        Ok(())
    }

    /// One value per item, in order. A value that cannot be computed for one item is
    /// [`Value::failed`]; an `Err` (a model that does not load) stops the run.
    fn score(&self, items: &[Item<'_>], ctx: &ScoreContext<'_>) -> Result<Vec<Value>>;
}

/// Scores each item on its own, in parallel: the body of every text scorer.
pub fn each(items: &[Item<'_>], score: impl Fn(&Item<'_>) -> Value + Sync + Send) -> Result<Vec<Value>> {
    Ok(items.par_iter().map(score).collect())
}

/// A scorer's parameters from its rubric table (unknown fields are errors).
pub fn params<T: DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| e.message().to_string())
}

/// The evaluated model, for scorers that read its probabilities (perplexity).
pub trait ReferenceModel: Sync {
    /// Perplexity of the case's reference answer given its prompt.
    fn perplexity(&self, case: &Case) -> Result<f64>;
}

/// What the user (not a rubric) allows LLM judges: where outputs may be sent and which
/// environment variable holds the key sent with them. A rubric, possibly written by someone
/// else, names an endpoint; it is called only when listed here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JudgePolicy {
    /// Endpoints judges may call (base URLs, compared without a trailing `/` or `/v1`).
    pub allowed_endpoints: Vec<String>,
    /// The variable whose value is sent as the judges' API key (none: no key is sent).
    pub api_key_env: Option<String>,
    /// Largest judge reply read, in bytes (none: [`crate::chat::DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: Option<u64>,
}

impl JudgePolicy {
    /// Whether `endpoint` is one the user allowed.
    pub fn allows(&self, endpoint: &str) -> bool {
        self.allowed_endpoints.iter().any(|a| base_url(a) == base_url(endpoint))
    }
}

/// What model scorers need, loaded once per run and shared by every check.
pub struct ScoreContext<'a> {
    model: Option<&'a dyn ReferenceModel>,
    backend_kind: String,
    judges: JudgePolicy,
    embedders: Mutex<HashMap<PathBuf, Arc<Embedder>>>,
    chat_clients: Mutex<HashMap<String, Arc<ChatClient>>>,
}

impl<'a> ScoreContext<'a> {
    /// A context for outputs from the backend of kind `backend_kind`, with the evaluated
    /// model where the backend holds one.
    pub fn new(backend_kind: impl Into<String>, model: Option<&'a dyn ReferenceModel>) -> Self {
        Self { model, backend_kind: backend_kind.into(), judges: JudgePolicy::default(), embedders: Mutex::default(), chat_clients: Mutex::default() }
    }

    /// This context with the user's judge policy (by default no judge endpoint is allowed).
    pub fn with_judges(mut self, policy: JudgePolicy) -> Self {
        self.judges = policy;
        self
    }

    /// What the user allows LLM judges.
    pub fn judges(&self) -> &JudgePolicy {
        &self.judges
    }

    /// The evaluated model, if the backend holds it.
    pub fn reference_model(&self) -> Option<&'a dyn ReferenceModel> {
        self.model
    }

    /// The kind of backend the outputs came from (for messages).
    pub fn backend_kind(&self) -> &str {
        &self.backend_kind
    }

    /// The embedding model in `dir`, loaded on first use.
    pub fn embedder(&self, dir: &Path) -> Result<Arc<Embedder>> {
        let mut loaded = self.embedders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = loaded.get(dir) {
            return Ok(e.clone());
        }
        let embedder = Arc::new(Embedder::load(dir)?);
        loaded.insert(dir.to_path_buf(), embedder.clone());
        Ok(embedder)
    }

    /// A chat client for `config`, built on first use (one per endpoint, model, key
    /// variable and timeout).
    pub fn chat_client(&self, config: &HttpConfig) -> Result<Arc<ChatClient>> {
        let key = format!("{}\n{}\n{:?}\n{:?}", config.endpoint, config.model, config.api_key_env, config.timeout);
        let mut clients = self.chat_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = Arc::new(ChatClient::new(config.clone())?);
        clients.insert(key, client.clone());
        Ok(client)
    }
}
