//! Pure-Rust text metrics that reproduce the Python reference implementations exactly:
//! ROUGE-1/2/L as computed by `rouge-score` (with a CJK-aware tokenizer) and sentence BLEU
//! as computed by `sacrebleu.sentence_bleu`, and LLaMA-Factory's own BLEU-4 and ROUGE
//! (jieba words, `rouge_chinese`, NLTK). `tests/scorer_vectors.rs` checks them against the
//! oracle vectors recorded in `tests/vectors/scorers/`.

pub mod bleu;
pub mod llamafactory;
pub mod rouge;
pub mod tokens;
