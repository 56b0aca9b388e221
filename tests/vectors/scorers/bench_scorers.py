"""Python reference benchmark for tunelab's non-model scorers.

usage (from the repository root):
    ~/.cache/tunelab/refvenv/bin/python tests/vectors/scorers/bench_scorers.py \
        [--pairs tests/vectors/scorers/pairs.jsonl] [--n 10000]

Expansion rule (replicate exactly on the Rust side): with P = the pairs of the file in file
order (len(P) = 300 for the checked-in file) and i = 0, 1, ..., N-1,

    reference_i = P[i % len(P)]["reference"]
    candidate_i = P[i % len(P)]["candidate"] + " " + str(i)     # decimal, no padding

i.e. the candidate gets one ASCII space and the index appended, so no two expanded pairs are
identical copies (even an empty candidate becomes " <i>").

Each scorer runs over all N pairs in turn (single process, no multiprocessing), timed with
time.perf_counter(); the total is the sum of the per-scorer times. Scorers:

  exact_match   SQuAD normalization of both texts, then equality. normalize(s): lowercase;
                delete every character of string.punctuation; replace r"\\b(a|an|the)\\b" with
                " "; collapse whitespace (" ".join(s.split())).
  contains      the reference's first whitespace-separated word (reference.split()[0]) is a
                case-sensitive substring of the candidate; False for a reference with no words.
  regex         re.search(r"\\d+", candidate) is not None (Python's Unicode \\d).
  sections      "Vulnerability:", "Risk:", "Location:", "Fix:" all occur in the candidate in
                this order (each searched from the end of the previous match; case-sensitive).
  json_valid    json.loads(candidate) succeeds.
  length        1 <= len(candidate) <= 2000 (Python str length = code points).
  rouge         rouge-score RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False,
                tokenizer=CjkAwareTokenizer()).score(reference, candidate)
  bleu          sacrebleu.sentence_bleu(candidate, [reference], tokenize="zh" if either text
                contains CJK else "13a"), all other arguments default.

Prints one line per scorer and then
    python reference: N pairs in S s = X pairs/s
"""
import argparse
import json
import os
import re
import string
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from record_scorers import CjkAwareTokenizer, bleu, load_pairs  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402

SECTIONS = ["Vulnerability:", "Risk:", "Location:", "Fix:"]
PUNCT = set(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")
DIGITS = re.compile(r"\d+")


def expand(pairs, n):
    out = []
    for i in range(n):
        p = pairs[i % len(pairs)]
        out.append((p["reference"], p["candidate"] + " " + str(i)))
    return out


def squad_normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in PUNCT)
    s = ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(ref, cand):
    return squad_normalize(cand) == squad_normalize(ref)


def contains(ref, cand):
    words = ref.split()
    return bool(words) and words[0] in cand


def regex(ref, cand):
    return DIGITS.search(cand) is not None


def sections(ref, cand):
    pos = 0
    for name in SECTIONS:
        at = cand.find(name, pos)
        if at < 0:
            return False
        pos = at + len(name)
    return True


def json_valid(ref, cand):
    try:
        json.loads(cand)
        return True
    except ValueError:
        return False


def length(ref, cand):
    return 1 <= len(cand) <= 2000


def make_rouge():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False,
                                      tokenizer=CjkAwareTokenizer())
    return lambda ref, cand: scorer.score(ref, cand)


def sentence_bleu(ref, cand):
    return bleu(ref, cand)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default=os.path.join(HERE, "pairs.jsonl"))
    ap.add_argument("--n", type=int, default=10000)
    args = ap.parse_args()
    pairs = expand(load_pairs(args.pairs), args.n)
    scorers = [("exact_match", exact_match), ("contains", contains), ("regex", regex),
               ("sections", sections), ("json_valid", json_valid), ("length", length),
               ("rouge", make_rouge()), ("bleu", sentence_bleu)]
    total = 0.0
    for name, fn in scorers:
        start = time.perf_counter()
        for ref, cand in pairs:
            fn(ref, cand)
        secs = time.perf_counter() - start
        total += secs
        print(f"  {name:<12} {secs:8.3f} s")
    print(f"python reference: {len(pairs)} pairs in {total:.3f} s = "
          f"{len(pairs) / total:.0f} pairs/s")


if __name__ == "__main__":
    main()
