//! ROUGE-1, ROUGE-2 and ROUGE-L as computed by Python's `rouge-score` (`RougeScorer` with
//! `use_stemmer=False`) given the CJK-aware tokenizer of [`super::tokens::rouge_tokens`]:
//! clipped n-gram overlap for ROUGE-N, longest common subsequence for ROUGE-L, and
//! `scoring.fmeasure` for F1, including its zero cases.

use super::tokens::{ngram_overlap, ngram_total, rouge_tokens};

/// Precision, recall and F1 of one ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prf {
    /// Matched units over candidate units.
    pub precision: f64,
    /// Matched units over reference units.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

impl Prf {
    /// Builds the triple with F1 computed exactly as `rouge_score.scoring.fmeasure`.
    fn from_precision_recall(precision: f64, recall: f64) -> Self {
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        Prf { precision, recall, f1 }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L scores of one (reference, candidate) pair.
#[derive(Debug, Clone, Copy)]
pub struct RougeScores {
    /// Unigram overlap.
    pub rouge1: Prf,
    /// Bigram overlap.
    pub rouge2: Prf,
    /// Longest common subsequence.
    pub rouge_l: Prf,
}

/// Scores `candidate` against `reference` (rouge-score's `score(target, prediction)`).
pub fn rouge(reference: &str, candidate: &str) -> RougeScores {
    let reference = rouge_tokens(reference);
    let candidate = rouge_tokens(candidate);
    RougeScores { rouge1: rouge_n(&reference, &candidate, 1), rouge2: rouge_n(&reference, &candidate, 2), rouge_l: rouge_l(&reference, &candidate) }
}

/// One ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RougeVariant {
    /// Unigram overlap.
    Rouge1,
    /// Bigram overlap.
    Rouge2,
    /// Longest common subsequence.
    RougeL,
}

/// One variant's scores for a pair, computing only that variant (a rubric check needs one).
pub fn rouge_variant(reference: &str, candidate: &str, variant: RougeVariant) -> Prf {
    let (reference, candidate) = (rouge_tokens(reference), rouge_tokens(candidate));
    match variant {
        RougeVariant::Rouge1 => rouge_n(&reference, &candidate, 1),
        RougeVariant::Rouge2 => rouge_n(&reference, &candidate, 2),
        RougeVariant::RougeL => rouge_l(&reference, &candidate),
    }
}

/// ROUGE-N: clipped n-gram matches over n-gram counts, each count floored at 1.
fn rouge_n(reference: &[String], candidate: &[String], n: usize) -> Prf {
    let matched = ngram_overlap(reference, candidate, n) as f64;
    let candidate_total = ngram_total(candidate.len(), n).max(1) as f64;
    let reference_total = ngram_total(reference.len(), n).max(1) as f64;
    Prf::from_precision_recall(matched / candidate_total, matched / reference_total)
}

/// ROUGE-L: LCS length over token counts; all zero when either side has no tokens.
fn rouge_l(reference: &[String], candidate: &[String]) -> Prf {
    if reference.is_empty() || candidate.is_empty() {
        return Prf::from_precision_recall(0.0, 0.0);
    }
    let lcs = lcs_len(reference, candidate) as f64;
    Prf::from_precision_recall(lcs / candidate.len() as f64, lcs / reference.len() as f64)
}

/// Length of the longest common subsequence: O(n·m) time, one row of the shorter length.
fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut row = vec![0usize; short.len() + 1];
    for x in long {
        let mut diagonal = 0;
        for (j, y) in short.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { above.max(row[j]) };
            diagonal = above;
        }
    }
    row[short.len()]
}
