"""Record the text-metric oracle vectors (ROUGE-1/2/L, sentence BLEU, MiniLM embeddings).

How to run (from the repository root):

    ~/.cache/tunelab/refvenv/bin/python tests/vectors/scorers/record_scorers.py

Reads  tests/vectors/scorers/pairs.jsonl (from make_pairs.py) and writes, next to it:
  expected.jsonl            one line per pair: {id, rouge1, rouge2, rougeL: {p, r, f},
                            bleu (sacrebleu score, 0-100), bleu_tokenize ("13a" or "zh")}
  embedding_expected.jsonl  {id, cosine, ref_embedding_head} for 40 + 10 pairs
and prints the package versions (they are copied into README.md's `versions` field).

Produced with: python 3.11, rouge-score 0.1.2, sacrebleu 2.6.0, nltk 3.10.4,
sentence-transformers 6.2.0, transformers 5.24.0, torch 2.15.0 (CPU).

Options: --no-embeddings skips the (slow-to-load) sentence-transformers part.
"""
import argparse
import importlib.metadata as md
import json
import os
import platform
import sys

import sacrebleu
from rouge_score import rouge_scorer, tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
MODEL_DIR = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")

# CJK as defined for tunelab's metrics (evalsuite/src/metrics/tokens.rs `is_cjk`).
CJK_RANGES = [
    (0x4E00, 0x9FFF),    # CJK Unified Ideographs
    (0x3400, 0x4DBF),    # CJK Extension A
    (0x20000, 0x2A6DF),  # CJK Extension B
    (0xF900, 0xFAFF),    # CJK Compatibility Ideographs
    (0x3040, 0x309F),    # Hiragana
    (0x30A0, 0x30FF),    # Katakana
    (0xAC00, 0xD7AF),    # Hangul Syllables
]

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL"]
N_EMBED_FIRST = 40
N_EMBED_ZH = 10


def is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def contains_cjk(text):
    return any(is_cjk(ch) for ch in text)


class CjkAwareTokenizer(tokenizers.Tokenizer):
    """Lowercase; each CJK char is a token; maximal ASCII [a-z0-9] runs are tokens;
    every other character separates."""

    def tokenize(self, text):
        tokens, word = [], []
        for ch in text.lower():
            if is_cjk(ch):
                if word:
                    tokens.append("".join(word))
                    word = []
                tokens.append(ch)
            elif ("a" <= ch <= "z") or ("0" <= ch <= "9"):
                word.append(ch)
            elif word:
                tokens.append("".join(word))
                word = []
        if word:
            tokens.append("".join(word))
        return tokens


def bleu_tokenize_name(reference, candidate):
    return "zh" if contains_cjk(reference) or contains_cjk(candidate) else "13a"


def bleu(reference, candidate):
    name = bleu_tokenize_name(reference, candidate)
    return sacrebleu.sentence_bleu(candidate, [reference], tokenize=name).score, name


def prf(score):
    return {"p": score.precision, "r": score.recall, "f": score.fmeasure}


def load_pairs(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def record_text_metrics(pairs):
    custom = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=False,
                                      tokenizer=CjkAwareTokenizer())
    default = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=False)
    rows, checked = [], 0
    for pair in pairs:
        ref, cand = pair["reference"], pair["candidate"]
        scores = custom.score(ref, cand)
        if not contains_cjk(ref) and not contains_cjk(cand):
            # Without CJK the custom tokenizer must equal rouge-score's default one.
            assert scores == default.score(ref, cand), pair["id"]
            checked += 1
        score, name = bleu(ref, cand)
        row = {"id": pair["id"]}
        row.update({t: prf(scores[t]) for t in ROUGE_TYPES})
        row.update({"bleu": score, "bleu_tokenize": name})
        rows.append(row)
    print(f"rouge: custom == default tokenizer on all {checked} non-CJK pairs", file=sys.stderr)
    return rows


def embedding_pairs(pairs):
    both = [p for p in pairs if p["reference"] and p["candidate"]]
    first = both[:N_EMBED_FIRST]
    zh = [p for p in both[N_EMBED_FIRST:]
          if contains_cjk(p["reference"]) and contains_cjk(p["candidate"])][:N_EMBED_ZH]
    return first + zh


def record_embeddings(pairs):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(MODEL_DIR, device="cpu")
    print(f"embeddings: max_seq_length={model.max_seq_length}, modules="
          f"{[type(m).__name__ for m in model]}", file=sys.stderr)
    chosen = embedding_pairs(pairs)
    refs = model.encode([p["reference"] for p in chosen], batch_size=16,
                        normalize_embeddings=True, convert_to_numpy=True)
    cands = model.encode([p["candidate"] for p in chosen], batch_size=16,
                         normalize_embeddings=True, convert_to_numpy=True)
    rows = []
    for p, r, c in zip(chosen, refs, cands):
        rows.append({"id": p["id"], "cosine": float((r.astype("float64") * c).sum()),
                     "ref_embedding_head": [float(x) for x in r[:8]]})
    return rows


def versions():
    names = ["rouge-score", "sacrebleu", "nltk", "sentence-transformers", "transformers",
             "torch", "numpy"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default=os.path.join(HERE, "pairs.jsonl"))
    ap.add_argument("--no-embeddings", action="store_true")
    args = ap.parse_args()
    pairs = load_pairs(args.pairs)
    write_jsonl(os.path.join(HERE, "expected.jsonl"), record_text_metrics(pairs))
    if not args.no_embeddings:
        write_jsonl(os.path.join(HERE, "embedding_expected.jsonl"), record_embeddings(pairs))
    print(json.dumps({"versions": versions()}, indent=2))


if __name__ == "__main__":
    main()
