//! Dataset validation: every problem with file:line (and field), duplicates and
//! near-duplicates, over-long examples, train/eval overlap, and token-length statistics.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::example::{normalize_text, Example, SourceRef};
use super::load::Dataset;
use super::tokenize::{encode_example, EncodeOptions};
use crate::chat::ChatTemplate;
use crate::error::Result;
use crate::model::Tokenizer;
use crate::splitmix::{mix, GOLDEN};

/// How bad a problem is: errors make `data check` fail and the trainer refuse the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Unusable or harmful record.
    Error,
    /// Worth a look; does not block training.
    Warning,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// File and line of the record.
    pub source: SourceRef,
    /// The field concerned, if one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Issue {
    /// A new issue.
    pub fn new(severity: Severity, source: SourceRef, field: Option<String>, message: impl Into<String>) -> Self {
        Self { severity, source, field, message: message.into() }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.field {
            Some(field) => write!(f, "{}: {sev}: field `{field}` {}", self.source, self.message),
            None => write!(f, "{}: {sev}: {}", self.source, self.message),
        }
    }
}

/// Distribution of a length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    /// Smallest.
    pub min: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: usize,
    /// 95th percentile.
    pub p95: usize,
    /// Largest.
    pub max: usize,
}

impl LengthStats {
    fn of(mut v: Vec<usize>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Self { min: v[0], mean: v.iter().sum::<usize>() as f64 / v.len() as f64, p50: pick(0.5), p95: pick(0.95), max: v[v.len() - 1] })
    }
}

/// Validation settings.
#[derive(Debug, Clone)]
pub struct ValidationOptions {
    /// Token cutoff; longer examples are reported (they will be shortened).
    pub cutoff_len: usize,
    /// Fields longer than this many characters are reported.
    pub max_field_chars: usize,
    /// Word-trigram Jaccard similarity at or above which two examples are near-duplicates.
    pub near_duplicate_jaccard: f64,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        Self { cutoff_len: 1024, max_field_chars: 20_000, near_duplicate_jaccard: 0.9 }
    }
}

/// Everything `tunelab data check` reports about a dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The file checked.
    pub file: String,
    /// Records read (usable or not).
    pub records: usize,
    /// Records without errors.
    pub valid: usize,
    /// Every problem, errors first, then in file order.
    pub issues: Vec<Issue>,
    /// Later copies of an identical example.
    pub exact_duplicates: usize,
    /// Examples nearly identical to an earlier one.
    pub near_duplicates: usize,
    /// Examples whose prompt also appears in the evaluation file.
    pub eval_overlap: usize,
    /// Examples longer than the cutoff.
    pub over_cutoff: usize,
    /// Prompt length in tokens (with the chat template), when a tokenizer was given.
    pub prompt_tokens: Option<LengthStats>,
    /// Response length in tokens, when a tokenizer was given.
    pub response_tokens: Option<LengthStats>,
}

impl ValidationReport {
    /// Validates `data`, against `eval` for overlap when given; `model` (tokenizer and chat
    /// template) enables token statistics and the cutoff check.
    pub fn build(data: &Dataset, eval: Option<&Dataset>, model: Option<(&Tokenizer, &ChatTemplate)>, opts: &ValidationOptions) -> Result<Self> {
        let mut issues = data.issues.clone();
        let exs = &data.examples;
        let err = |ex: &Example, field: Option<&str>, msg: String| Issue::new(Severity::Error, ex.source.clone(), field.map(str::to_string), msg);
        let warn = |ex: &Example, field: Option<&str>, msg: String| Issue::new(Severity::Warning, ex.source.clone(), field.map(str::to_string), msg);

        for ex in exs {
            for (i, m) in ex.messages.iter().enumerate() {
                let n = m.content.chars().count();
                if n > opts.max_field_chars {
                    issues.push(warn(ex, None, format!("turn {} ({}) has {n} characters (> {})", i + 1, m.role.as_str(), opts.max_field_chars)));
                }
            }
        }

        // Exact duplicates, then near-duplicates (normalised text, then trigram Jaccard).
        let (mut exact, mut near) = (0, 0);
        let mut seen_exact: HashMap<String, usize> = HashMap::new();
        let mut seen_norm: HashMap<String, usize> = HashMap::new();
        let mut flagged = HashSet::new();
        for (i, ex) in exs.iter().enumerate() {
            if let Some(&j) = seen_exact.get(&ex.full_text()) {
                issues.push(err(ex, None, format!("exact duplicate of record {} (line {})", exs[j].source.record, exs[j].source.position())));
                exact += 1;
                flagged.insert(i);
                continue;
            }
            seen_exact.insert(ex.full_text(), i);
            let norm = normalize_text(&ex.full_text());
            if let Some(&j) = seen_norm.get(&norm) {
                issues.push(warn(
                    ex,
                    None,
                    format!(
                        "near-duplicate of record {} (line {}; equal after normalizing case, spacing and punctuation)",
                        exs[j].source.record,
                        exs[j].source.position()
                    ),
                ));
                near += 1;
                flagged.insert(i);
                continue;
            }
            seen_norm.insert(norm, i);
        }
        let shingles: Vec<Vec<u64>> = exs.iter().map(|e| trigram_hashes(&normalize_text(&e.full_text()))).collect();
        let mut buckets = MinHashBuckets::default();
        for i in 0..exs.len() {
            if flagged.contains(&i) {
                continue;
            }
            let signature = minhash_signature(&shingles[i]);
            // Earlier examples sharing a band are candidates; the exact Jaccard decides.
            let found =
                buckets.candidates(&signature).into_iter().map(|j| (j, jaccard(&shingles[i], &shingles[j]))).find(|&(_, s)| s >= opts.near_duplicate_jaccard);
            match found {
                Some((j, sim)) => {
                    let msg = format!("near-duplicate of record {} (line {}; word-trigram Jaccard {sim:.2})", exs[j].source.record, exs[j].source.position());
                    issues.push(warn(&exs[i], None, msg));
                    near += 1;
                    flagged.insert(i);
                }
                None => buckets.insert(&signature, i),
            }
        }

        let mut overlap = 0;
        if let Some(eval) = eval {
            let eval_prompts: HashMap<String, &SourceRef> = eval.examples.iter().map(|e| (normalize_text(&e.prompt_text()), &e.source)).collect();
            for ex in exs {
                if let Some(src) = eval_prompts.get(&normalize_text(&ex.prompt_text())) {
                    issues.push(err(ex, None, format!("prompt also appears in the evaluation data at {src} (train/eval overlap)")));
                    overlap += 1;
                }
            }
        }

        let (mut prompt_lens, mut response_lens, mut over) = (Vec::new(), Vec::new(), 0);
        if let Some((tok, template)) = model {
            let enc_opts = EncodeOptions { cutoff_len: usize::MAX, train_on_prompt: false };
            for ex in exs {
                let enc = encode_example(ex, template, tok, &enc_opts)?;
                prompt_lens.push(enc.prompt_tokens);
                response_lens.push(enc.response_tokens);
                let total = enc.prompt_tokens + enc.response_tokens;
                if total > opts.cutoff_len {
                    // The context keeps at least a quarter of the budget (see tokenize::fit).
                    let reply_room = opts.cutoff_len - enc.prompt_tokens.min(opts.cutoff_len / 4);
                    let what = if enc.response_tokens > reply_room {
                        format!("the reply ({} tokens) loses its end, end-of-turn token included, and the prompt is shortened", enc.response_tokens)
                    } else {
                        "the prompt will be shortened".to_string()
                    };
                    issues.push(warn(ex, None, format!("{total} tokens exceed the cutoff of {}: {what}", opts.cutoff_len)));
                    over += 1;
                }
            }
        }

        let records = exs.len() + data.issues.len();
        if records == 0 {
            let whole_file = SourceRef::new(&data.path, 1, 0);
            issues.push(Issue::new(Severity::Error, whole_file, None, "the file holds no records"));
        }
        issues.sort_by(|a, b| a.severity.cmp(&b.severity).then(a.source.record.cmp(&b.source.record)));
        let bad: HashSet<&SourceRef> = issues.iter().filter(|i| i.severity == Severity::Error).map(|i| &i.source).collect();
        Ok(Self {
            file: data.path.display().to_string(),
            records,
            valid: records.saturating_sub(bad.len()),
            issues,
            exact_duplicates: exact,
            near_duplicates: near,
            eval_overlap: overlap,
            over_cutoff: over,
            prompt_tokens: LengthStats::of(prompt_lens),
            response_tokens: LengthStats::of(response_lens),
        })
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.issues.iter().filter(|i| i.severity == Severity::Error).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.issues.iter().filter(|i| i.severity == Severity::Warning).count()
    }

    /// Whether any error was found.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// Positions ([`SourceRef::record`]) of records with errors, to drop with `--skip-invalid`.
    pub fn error_records(&self) -> HashSet<usize> {
        self.issues.iter().filter(|i| i.severity == Severity::Error).map(|i| i.source.record).collect()
    }

    /// The human-readable report.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("{}: {} records, {} valid\n", self.file, self.records, self.valid));
        for issue in &self.issues {
            out.push_str(&format!("  {issue}\n"));
        }
        out.push_str(&format!(
            "duplicates: {} exact, {} near; eval overlap: {}; over cutoff: {}\n",
            self.exact_duplicates, self.near_duplicates, self.eval_overlap, self.over_cutoff
        ));
        for (name, stats) in [("prompt tokens", &self.prompt_tokens), ("response tokens", &self.response_tokens)] {
            match stats {
                Some(s) => out.push_str(&format!("{name}: min {} / mean {:.0} / p50 {} / p95 {} / max {}\n", s.min, s.mean, s.p50, s.p95, s.max)),
                None => out.push_str(&format!("{name}: not computed (no model given)\n")),
            }
        }
        out.push_str(&format!("{} errors, {} warnings\n", self.error_count(), self.warning_count()));
        out
    }
}

fn trigram_hashes(norm: &str) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let words: Vec<&str> = norm.split(' ').collect();
    let mut out: Vec<u64> = words
        .windows(3.min(words.len().max(1)))
        .map(|w| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            w.hash(&mut h);
            h.finish()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Min-hashes per example; split into [`BANDS`] bands of [`ROWS`]. Two examples with
/// trigram Jaccard `s` share a band with probability `1 - (1 - s^ROWS)^BANDS`: above
/// 0.999 999 9 at s = 0.9, so near-duplicates are found in about linear time instead of
/// comparing every pair.
const ROWS: usize = 4;
const BANDS: usize = 16;

fn minhash_signature(shingles: &[u64]) -> [u64; ROWS * BANDS] {
    let mut signature = [u64::MAX; ROWS * BANDS];
    for &h in shingles {
        for (k, slot) in signature.iter_mut().enumerate() {
            *slot = (*slot).min(mix(h ^ (k as u64).wrapping_mul(GOLDEN)));
        }
    }
    signature
}

/// Examples indexed by each band of their signature.
#[derive(Default)]
struct MinHashBuckets {
    bands: Vec<HashMap<[u64; ROWS], Vec<usize>>>,
}

impl MinHashBuckets {
    /// Indexed examples sharing at least one band with `signature`, in index order.
    fn candidates(&self, signature: &[u64; ROWS * BANDS]) -> Vec<usize> {
        let mut found: Vec<usize> = self.bands.iter().zip(signature.chunks_exact(ROWS)).filter_map(|(band, key)| band.get(key)).flatten().copied().collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    fn insert(&mut self, signature: &[u64; ROWS * BANDS], index: usize) {
        self.bands.resize_with(BANDS, HashMap::new);
        for (band, key) in self.bands.iter_mut().zip(signature.chunks_exact(ROWS)) {
            band.entry(key.try_into().expect("chunks of ROWS")).or_default().push(index);
        }
    }
}
