//! Tokenization and n-gram helpers shared by the metrics: the CJK character test, the
//! CJK-aware ROUGE tokenizer, Python's notion of whitespace, and clipped n-gram counting
//! (used by both ROUGE-N and BLEU).

use std::collections::HashMap;
use std::hash::Hash;

/// Code-point ranges counted as CJK: Han (URO, Ext A, Ext B, compatibility), kana, Hangul.
const CJK_RANGES: [(u32, u32); 7] = [
    (0x4E00, 0x9FFF),   // CJK Unified Ideographs
    (0x3400, 0x4DBF),   // CJK Unified Ideographs Extension A
    (0x20000, 0x2A6DF), // CJK Unified Ideographs Extension B
    (0xF900, 0xFAFF),   // CJK Compatibility Ideographs
    (0x3040, 0x309F),   // Hiragana
    (0x30A0, 0x30FF),   // Katakana
    (0xAC00, 0xD7AF),   // Hangul Syllables
];

/// True for a CJK ideograph, kana or Hangul syllable (see `CJK_RANGES`).
pub fn is_cjk(c: char) -> bool {
    let cp = u32::from(c);
    CJK_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp))
}

/// True if any character of `text` is CJK per [`is_cjk`].
pub fn contains_cjk(text: &str) -> bool {
    text.chars().any(is_cjk)
}

/// ROUGE tokens: lowercase, then every CJK char is a token and maximal runs of ASCII
/// `[a-z0-9]` are tokens; everything else separates. Matches Python's `str.lower()` followed
/// by the same scan (e.g. `İ` lowercases to `i` + U+0307 and yields the token `i`).
pub fn rouge_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            word.push(c);
            continue;
        }
        flush_word(&mut word, &mut tokens);
        if is_cjk(c) {
            tokens.push(c.to_string());
        }
    }
    flush_word(&mut word, &mut tokens);
    tokens
}

/// Moves a non-empty pending word into `tokens`.
fn flush_word(word: &mut String, tokens: &mut Vec<String>) {
    if !word.is_empty() {
        tokens.push(std::mem::take(word));
    }
}

/// Python's `str.isspace()` for one character: Unicode `White_Space` plus U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no arguments: non-empty runs between Python whitespace.
pub fn py_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_py_space).filter(|s| !s.is_empty())
}

/// Number of `n`-grams in a sequence of `len` tokens (0 when `len < n`).
pub fn ngram_total(len: usize, n: usize) -> usize {
    (len + 1).saturating_sub(n)
}

/// Multiset of the `n`-grams of `tokens`, keyed by token slice.
pub fn ngram_counts<T: Hash + Eq>(tokens: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut counts = HashMap::with_capacity(ngram_total(tokens.len(), n));
    if n > 0 {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Clipped `n`-gram overlap: the sum over n-grams of min(count in `a`, count in `b`).
pub fn ngram_overlap<T: Hash + Eq>(a: &[T], b: &[T], n: usize) -> usize {
    if n == 0 || a.len() < n || b.len() < n {
        return 0;
    }
    let counts_b = ngram_counts(b, n);
    ngram_counts(a, n).iter().map(|(gram, &count)| count.min(counts_b.get(gram).copied().unwrap_or(0))).sum()
}
