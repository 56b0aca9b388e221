//! Sentence BLEU exactly as `sacrebleu.sentence_bleu(hyp, [ref], tokenize=T)` (sacrebleu
//! 2.x defaults: 4-gram, `exp` smoothing, effective order, case-sensitive), with T = `zh` when
//! either text contains CJK ([`super::tokens::contains_cjk`]) and `13a` otherwise. The
//! tokenizers replay sacrebleu's regular expressions with hand-written character scans.

use super::tokens::{contains_cjk, is_py_space, ngram_overlap, ngram_total, py_split};

/// Highest n-gram order (sacrebleu's `MAX_NGRAM_ORDER`).
const MAX_ORDER: usize = 4;

/// A sacrebleu tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BleuTokenizer {
    /// `13a`: mteval-v13a, the WMT default.
    Thirteen,
    /// `zh`: every Chinese character on its own, the rest as `13a`'s regex part.
    Zh,
}

/// sacrebleu's `_UCODE_RANGES` for `zh`, as its string comparisons actually evaluate them.
/// Two entries are written there as `'\u20000'..'\u2a6d6'` and `'\u2f800'..'\u2fa1d'`, which
/// Python reads as two-character strings (U+2000 + '0', ...); compared with one character
/// they select U+2001..=U+2A6D and U+2F81..=U+2FA1, so general punctuation (— “ ” …), €,
/// arrows and math symbols are split off like Han, while Extension B (U+20000..) is not.
const ZH_RANGES: [(u32, u32); 22] = [
    (0x3400, 0x4DB5),
    (0x4E00, 0x9FA5),
    (0x9FA6, 0x9FBB),
    (0xF900, 0xFA2D),
    (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9),
    (0x2001, 0x2A6D),
    (0x2F81, 0x2FA1),
    (0xFF00, 0xFFEF),
    (0x2E80, 0x2EFF),
    (0x3000, 0x303F),
    (0x31C0, 0x31EF),
    (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),
    (0x3100, 0x312F),
    (0x31A0, 0x31BF),
    (0xFE10, 0xFE1F),
    (0xFE30, 0xFE4F),
    (0x2600, 0x26FF),
    (0x2700, 0x27BF),
    (0x3200, 0x32FF),
    (0x3300, 0x33FF),
];

/// sacrebleu's sentence BLEU (0–100) of `hypothesis` against the single `reference`.
pub fn sentence_bleu(reference: &str, hypothesis: &str) -> f64 {
    let tokenizer = if contains_cjk(reference) || contains_cjk(hypothesis) { BleuTokenizer::Zh } else { BleuTokenizer::Thirteen };
    // `BLEU._preprocess_segment`: rstrip, then tokenize.
    let reference = tokenize(reference.trim_end_matches(is_py_space), tokenizer);
    let hypothesis = tokenize(hypothesis.trim_end_matches(is_py_space), tokenizer);
    let mut correct = [0usize; MAX_ORDER];
    let mut total = [0usize; MAX_ORDER];
    for n in 1..=MAX_ORDER {
        correct[n - 1] = ngram_overlap(&hypothesis, &reference, n);
        total[n - 1] = ngram_total(hypothesis.len(), n);
    }
    compute_bleu(&correct, &total, hypothesis.len(), reference.len())
}

/// Tokenizes one line as sacrebleu's `Tokenizer13a` / `TokenizerZh` `__call__` does.
pub fn tokenize(text: &str, tokenizer: BleuTokenizer) -> Vec<String> {
    let chars = match tokenizer {
        BleuTokenizer::Thirteen => prepare_13a(text),
        BleuTokenizer::Zh => prepare_zh(text),
    };
    regexp_tokenize(&chars)
}

/// `Tokenizer13a`'s language-independent part, padded with one space on each side.
fn prepare_13a(line: &str) -> Vec<char> {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut chars = Vec::with_capacity(line.len() + 2);
    chars.push(' ');
    chars.extend(line.chars());
    chars.push(' ');
    chars
}

/// `TokenizerZh`: strip, then surround every Chinese character with spaces.
fn prepare_zh(line: &str) -> Vec<char> {
    let mut chars = Vec::with_capacity(line.len());
    for c in line.trim_matches(is_py_space).chars() {
        if is_zh_char(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars
}

/// sacrebleu's `TokenizerZh._is_chinese_char` (see [`ZH_RANGES`]).
fn is_zh_char(c: char) -> bool {
    let cp = u32::from(c);
    ZH_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp))
}

/// The ASCII punctuation class of `TokenizerRegexp`'s first rule: `{`–`~`, `[`–backtick,
/// space–`&`, `(`–`+`, `:`–`@` and `/` (not `'`, `,`, `-`, `.`, digits or letters).
fn is_split_punct(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_not_digit(c: char) -> bool {
    !c.is_ascii_digit()
}

fn is_period_or_comma(c: char) -> bool {
    c == '.' || c == ','
}

fn is_dash(c: char) -> bool {
    c == '-'
}

/// A two-character rule `re.sub(r'(X)(Y)', repl)` with `repl` = `\1 \2 ` or ` \1 \2`.
struct PairRule {
    first: fn(char) -> bool,
    second: fn(char) -> bool,
    /// True for ` \1 \2`, false for `\1 \2 `.
    leading_space: bool,
}

/// `TokenizerRegexp`'s rules 2–4, applied in this order after the punctuation rule.
const PAIR_RULES: [PairRule; 3] = [
    // tokenize period and comma unless preceded by a digit
    PairRule { first: is_not_digit, second: is_period_or_comma, leading_space: false },
    // tokenize period and comma unless followed by a digit
    PairRule { first: is_period_or_comma, second: is_not_digit, leading_space: true },
    // tokenize dash when preceded by a digit
    PairRule { first: is_digit, second: is_dash, leading_space: false },
];

/// `TokenizerRegexp.__call__`: the four substitutions, then `' '.join(line.split())`.
fn regexp_tokenize(chars: &[char]) -> Vec<String> {
    let mut line = pad_punctuation(chars);
    for rule in &PAIR_RULES {
        line = apply_pair_rule(&line, rule);
    }
    let line: String = line.into_iter().collect();
    py_split(&line).map(str::to_owned).collect()
}

/// Rule 1: every character of the punctuation class becomes ` c `.
fn pad_punctuation(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() * 2);
    for &c in chars {
        if is_split_punct(c) {
            out.extend([' ', c, ' ']);
        } else {
            out.push(c);
        }
    }
    out
}

/// One pair rule with `re.sub`'s leftmost, non-overlapping matching.
fn apply_pair_rule(chars: &[char], rule: &PairRule) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        let (a, next) = (chars[i], chars.get(i + 1).copied());
        match next {
            Some(b) if (rule.first)(a) && (rule.second)(b) => {
                if rule.leading_space {
                    out.extend([' ', a, ' ', b]);
                } else {
                    out.extend([a, ' ', b, ' ']);
                }
                i += 2;
            }
            _ => {
                out.push(a);
                i += 1;
            }
        }
    }
    out
}

/// `BLEU.compute_bleu` for one segment with `exp` smoothing and effective order.
fn compute_bleu(correct: &[usize], total: &[usize], sys_len: usize, ref_len: usize) -> f64 {
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut smooth = 1.0_f64;
    let mut log_sum = 0.0_f64;
    let mut order = 0_u32;
    for (&c, &t) in correct.iter().zip(total) {
        if t == 0 {
            break;
        }
        order += 1;
        let precision = if c == 0 {
            smooth *= 2.0;
            100.0 / (smooth * t as f64)
        } else {
            100.0 * c as f64 / t as f64
        };
        log_sum += precision.ln();
    }
    brevity_penalty(sys_len, ref_len) * (log_sum / f64::from(order)).exp()
}

/// `exp(1 - r/c)` when the hypothesis is shorter than the reference, else 1.
fn brevity_penalty(sys_len: usize, ref_len: usize) -> f64 {
    if sys_len >= ref_len {
        1.0
    } else if sys_len == 0 {
        0.0
    } else {
        (1.0 - ref_len as f64 / sys_len as f64).exp()
    }
}
