//! LLaMA-Factory's own similarity metrics (its `ComputeSimilarity`, what `do_predict` writes
//! to `predict_results.json`), reproduced value for value:
//!
//! - ROUGE-1/2/L F: both texts cut into words by jieba (precise mode with HMM), the words
//!   joined by spaces and scored by `rouge_chinese` (sentences cut at `。！？?` and `……`,
//!   n-grams as sets, ROUGE-L the longest common subsequence of all words, F with a 1e-8
//!   guard); 0 when either text has no words.
//! - BLEU-4: NLTK's `sentence_bleu` on characters with `method3` smoothing.
//!
//! Each value is ×100 and rounded to 4 decimals, as LLaMA-Factory rounds each case before it
//! averages them. Checked against values recorded from those Python packages
//! (`tests/vectors/scorers/llamafactory_metrics.json`).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// ROUGE F scores of one prediction (×100, rounded as LLaMA-Factory rounds them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScores {
    /// ROUGE-1 F.
    pub rouge_1: f64,
    /// ROUGE-2 F.
    pub rouge_2: f64,
    /// ROUGE-L F.
    pub rouge_l: f64,
}

/// jieba's default dictionary, loaded once (about 0.2 s).
fn jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: OnceLock<jieba_rs::Jieba> = OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}

/// `round(x, 4)` as Python computes it: the decimal nearest the exact binary value.
fn round4(x: f64) -> f64 {
    format!("{x:.4}").parse().unwrap_or(x)
}

/// Python's `str.isspace` for one character (which, unlike Rust's `char::is_whitespace`,
/// includes the separators U+001C–U+001F).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()`: the runs between whitespace.
fn py_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(py_isspace).filter(|w| !w.is_empty())
}

/// Characters jieba treats as Chinese (its `re_han` range).
fn is_han(c: char) -> bool {
    ('\u{4E00}'..='\u{9FD5}').contains(&c)
}

/// Characters of jieba's dictionary-cut blocks (`re_han_default`).
fn is_han_default(c: char) -> bool {
    is_han(c) || c.is_ascii_alphanumeric() || "+#&._%-".contains(c)
}

/// `jieba.cut(text)` (precise mode, HMM on), as Python's jieba 0.42 cuts it. The Chinese
/// runs go through jieba-rs (the same dictionary, route and HMM); the rest follows Python
/// jieba's own rules, where jieba-rs differs: outside the dictionary blocks every character
/// is a word (`\r\n` and each whitespace character included); inside them, a run of letters,
/// digits and `+#&._%-` is split by `finalseg`'s pattern `[a-zA-Z0-9]+(?:\.\d+)?%?`, the
/// pieces between matches kept whole (so `well-known` is `well`, `-`, `known`, and
/// `1.26.4` is `1.26`, `.`, `4`).
fn jieba_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for (in_block, run) in runs(text, is_han_default) {
        if !in_block {
            let mut rest = run;
            while let Some(c) = rest.chars().next() {
                let n = if rest.starts_with("\r\n") { 2 } else { c.len_utf8() };
                words.push(rest[..n].to_string());
                rest = &rest[n..];
            }
            continue;
        }
        for (han, part) in runs(run, is_han) {
            if han {
                words.extend(jieba().cut(part, true).iter().map(|t| t.word.to_string()));
            } else {
                words.extend(finalseg_pieces(part));
            }
        }
    }
    words
}

/// `text` cut into maximal runs of characters that do or do not satisfy `inside`.
fn runs(text: &str, inside: fn(char) -> bool) -> Vec<(bool, &str)> {
    let mut out: Vec<(bool, &str)> = Vec::new();
    let mut start = 0;
    let mut current: Option<bool> = None;
    for (i, c) in text.char_indices() {
        let kind = inside(c);
        if current.is_some_and(|k| k != kind) {
            out.push((current.unwrap_or(false), &text[start..i]));
            start = i;
        }
        current = Some(kind);
    }
    if let Some(kind) = current {
        out.push((kind, &text[start..]));
    }
    out
}

/// `re.split("([a-zA-Z0-9]+(?:\.\d+)?%?)", text)` without the empty pieces.
fn finalseg_pieces(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut pieces = Vec::new();
    let (mut i, mut gap) = (0, 0);
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        if i < b.len() && b[i] == b'%' {
            i += 1;
        }
        if gap < start {
            pieces.push(text[gap..start].to_string());
        }
        pieces.push(text[start..i].to_string());
        gap = i;
    }
    if gap < b.len() {
        pieces.push(text[gap..].to_string());
    }
    pieces
}

/// ROUGE-1/2/L of `prediction` against `reference`, as LLaMA-Factory scores them.
pub fn rouge(reference: &str, prediction: &str) -> RougeScores {
    let words = |text: &str| -> String { jieba_words(text).join(" ") };
    let (hyp, refr) = (words(prediction), words(reference));
    if py_split(&hyp).next().is_none() || py_split(&refr).next().is_none() {
        return RougeScores { rouge_1: 0.0, rouge_2: 0.0, rouge_l: 0.0 };
    }
    let (hyp, refr) = (rouge_chinese_words(&hyp), rouge_chinese_words(&refr));
    let f = |v: f64| round4(v * 100.0);
    RougeScores { rouge_1: f(rouge_n(&hyp, &refr, 1)), rouge_2: f(rouge_n(&hyp, &refr, 2)), rouge_l: f(rouge_l(&hyp, &refr)) }
}

/// The words `rouge_chinese` scores: its sentences (`cut_sent`), each with runs of
/// whitespace collapsed, empty ones dropped, then split on single spaces and flattened.
fn rouge_chinese_words(text: &str) -> Vec<String> {
    cut_sentences(text)
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| py_split(s).collect::<Vec<_>>().join(" "))
        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// `rouge_chinese.Rouge.cut_sent`: a line break after `。！？?` (unless a closing quote
/// follows), after six dots, after two `…`, and after `。！？?` plus a closing quote (unless
/// punctuation follows); trailing whitespace removed; split at line breaks.
fn cut_sentences(text: &str) -> Vec<String> {
    let is_end = |c: char| matches!(c, '。' | '！' | '？' | '?');
    let is_quote = |c: char| matches!(c, '”' | '’');
    let mut s: Vec<char> = text.chars().collect();
    // Each regex substitution in turn, as `re.sub` applies it: non-overlapping matches
    // scanned left to right, a newline inserted between the two groups.
    let sub = |s: &[char], first_len: &dyn Fn(&[char], usize) -> Option<usize>, second_ok: &dyn Fn(char) -> bool| -> Vec<char> {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            if let Some(n) = first_len(s, i) {
                if i + n < s.len() && second_ok(s[i + n]) {
                    out.extend_from_slice(&s[i..i + n]);
                    out.push('\n');
                    out.push(s[i + n]);
                    i += n + 1;
                    continue;
                }
            }
            out.push(s[i]);
            i += 1;
        }
        out
    };
    s = sub(&s, &|s, i| is_end(s[i]).then_some(1), &|c| !is_quote(c));
    s = sub(&s, &|s, i| (i + 6 <= s.len() && s[i..i + 6].iter().all(|&c| c == '.')).then_some(6), &|c| !is_quote(c));
    s = sub(&s, &|s, i| (i + 2 <= s.len() && s[i..i + 2].iter().all(|&c| c == '…')).then_some(2), &|c| !is_quote(c));
    s = sub(&s, &|s, i| (i + 2 <= s.len() && is_end(s[i]) && is_quote(s[i + 1])).then_some(2), &|c| !matches!(c, '，' | '。' | '！' | '？' | '?'));
    let text: String = s.into_iter().collect();
    text.trim_end_matches(py_isspace).split('\n').map(str::to_string).collect()
}

/// `rouge_chinese`'s F with its guard against 0/0.
fn f_score(overlap: usize, hyp: usize, refr: usize) -> f64 {
    let p = if hyp == 0 { 0.0 } else { overlap as f64 / hyp as f64 };
    let r = if refr == 0 { 0.0 } else { overlap as f64 / refr as f64 };
    2.0 * ((p * r) / (p + r + 1e-8))
}

/// ROUGE-N over n-gram sets.
fn rouge_n(hyp: &[String], refr: &[String], n: usize) -> f64 {
    let grams = |w: &[String]| -> HashSet<Vec<String>> { w.windows(n).map(<[String]>::to_vec).collect() };
    let (h, r) = (grams(hyp), grams(refr));
    f_score(h.intersection(&r).count(), h.len(), r.len())
}

/// ROUGE-L: the longest common subsequence of all words.
fn rouge_l(hyp: &[String], refr: &[String]) -> f64 {
    let mut row = vec![0usize; hyp.len() + 1];
    for r in refr {
        let mut diagonal = 0;
        for (j, h) in hyp.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if r == h { diagonal + 1 } else { row[j + 1].max(row[j]) };
            diagonal = above;
        }
    }
    let lcs = row[hyp.len()] as f64;
    let (p, r) = (lcs / hyp.len() as f64, lcs / refr.len() as f64);
    2.0 * ((p * r) / (p + r + 1e-8))
}

/// BLEU-4 of `prediction` against `reference` on characters (NLTK `sentence_bleu`,
/// `method3`), ×100 and rounded as LLaMA-Factory rounds it.
pub fn bleu4(reference: &str, prediction: &str) -> f64 {
    let (hyp, refr): (Vec<char>, Vec<char>) = (prediction.chars().collect(), reference.chars().collect());
    // Modified precision per order: clipped matches / max(1, hypothesis n-grams).
    let precision = |n: usize| -> (usize, usize) {
        let (h, r) = (ngram_counts(&hyp, n), ngram_counts(&refr, n));
        let matched = h.iter().map(|(g, &c)| c.min(r.get(g).copied().unwrap_or(0))).sum();
        (matched, h.values().sum::<usize>().max(1))
    };
    let orders: Vec<(usize, usize)> = (1..=4).map(precision).collect();
    if orders[0].0 == 0 {
        return 0.0;
    }
    // method3: the k-th order with no match counts 1 / (2^k · denominator).
    let mut k = 0;
    let p: Vec<f64> = orders
        .iter()
        .map(|&(num, den)| {
            if num == 0 {
                k += 1;
                1.0 / (2f64.powi(k) * den as f64)
            } else {
                num as f64 / den as f64
            }
        })
        .collect();
    let (c, r) = (hyp.len() as f64, refr.len() as f64);
    let bp = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    round4(bp * fsum(p.iter().map(|p| 0.25 * p.ln())).exp() * 100.0)
}

/// How often each `n`-gram of `chars` occurs.
fn ngram_counts(chars: &[char], n: usize) -> HashMap<&[char], usize> {
    let mut counts = HashMap::new();
    for g in chars.windows(n) {
        *counts.entry(g).or_insert(0) += 1;
    }
    counts
}

/// The correctly rounded sum, as Python's `math.fsum` (Shewchuk's exact partials).
fn fsum(values: impl Iterator<Item = f64>) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for mut x in values {
        let mut kept = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        partials.truncate(kept);
        partials.push(x);
    }
    // The partials are non-overlapping and increasing; summed from the largest down.
    partials.iter().rev().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_cut_as_rouge_chinese_cuts_them() {
        assert_eq!(cut_sentences("你好。世界！好吗？ok? yes"), ["你好。", "世界！", "好吗？", "ok?", " yes"]);
        assert_eq!(cut_sentences("他说：“走。”然后"), ["他说：“走。”", "然后"]);
        assert_eq!(cut_sentences("wait...... now  "), ["wait......", " now"]);
    }

    #[test]
    fn words_are_cut_as_python_jieba_cuts_them() {
        // Python jieba 0.42.1's `lcut` of each text.
        let cases: [(&str, &[&str]); 5] = [
            ("well-known state-of-the-art", &["well", "-", "known", " ", "state", "-", "of", "-", "the", "-", "art"]),
            ("x.y,z", &["x", ".", "y", ",", "z"]),
            ("𠀀𠀁中", &["𠀀", "𠀁", "中"]),
            ("numpy==1.26.4 然后重试。", &["numpy", "=", "=", "1.26", ".", "4", " ", "然后", "重试", "。"]),
            ("john.doe@example.com 010-9999\r\n", &["john", ".", "doe", "@", "example", ".", "com", " ", "010", "-", "9999", "\r\n"]),
        ];
        for (text, want) in cases {
            assert_eq!(jieba_words(text), want, "{text:?}");
        }
    }

    #[test]
    fn identical_and_disjoint_texts_score_the_extremes() {
        let same = rouge("the cat sat", "the cat sat");
        assert!(same.rouge_1 > 99.99 && same.rouge_l > 99.99, "{same:?}");
        assert_eq!(rouge("abc", "xyz").rouge_1, 0.0);
        assert_eq!(rouge("", "words"), RougeScores { rouge_1: 0.0, rouge_2: 0.0, rouge_l: 0.0 });
        assert_eq!(bleu4("abcdefgh", "abcdefgh"), 100.0);
        assert_eq!(bleu4("abc", "xyz"), 0.0);
        // Python's math.fsum gives these (the exact sums, rounded once).
        assert_eq!(fsum([0.1, 0.2, 0.3, -0.6].into_iter()), 2.7755575615628914e-17);
        assert_eq!(fsum([1e100, 1.0, -1e100, 1e-100].into_iter()), 1.0);
    }
}
