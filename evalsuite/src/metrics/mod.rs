//! Pure-Rust text metrics that reproduce the Python reference implementations exactly:
//! ROUGE-1/2/L as computed by `rouge-score` (with a CJK-aware tokenizer) and sentence BLEU
//! as computed by `sacrebleu.sentence_bleu`. `tests/scorer_vectors.rs` checks both against
//! the oracle vectors recorded in `tests/vectors/scorers/`.

pub mod bleu;
pub mod rouge;
pub mod tokens;
