"""Build the (reference, candidate) pairs for the text-metric oracle vectors.

Deterministic: a fixed list of base texts, hand-written paraphrases and edge cases, plus
perturbations driven by `random.Random(SEED)`. Running it twice gives byte-identical output.

usage: python tests/vectors/scorers/make_pairs.py [OUT.jsonl]
       (default OUT: pairs.jsonl next to this script; any Python 3.8+, no packages needed)
"""
import json
import os
import random
import sys

SEED = 20260607
TARGET = 300

# ~60 base texts: English sentences and paragraphs, numbers, punctuation, HTML-ish text,
# Chinese, mixed Chinese/English, Japanese, Korean, code, and odd Unicode.
BASE = [
    # 0-19: English sentences
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat and looked out of the window.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The capital of France is Paris, which is also its largest city.",
    "Water boils at 100 degrees Celsius at sea level.",
    "She didn't know whether the train would arrive on time.",
    "Machine learning models can overfit when the training set is small.",
    "Please restart the server after updating the configuration file.",
    "The meeting was moved from Tuesday to Thursday afternoon.",
    "An apple a day keeps the doctor away, or so they say.",
    "Rust guarantees memory safety without a garbage collector.",
    "The committee approved the budget with a narrow majority.",
    "It's raining cats and dogs outside -- bring an umbrella!",
    "Pi is approximately 3.14, and e is roughly 2.718.",
    "The company hired 1,000 new employees in 2023, up 12.5% from 2022.",
    "State-of-the-art results were reported on well-known benchmarks.",
    'He said, "I will be there at 5 p.m." and then left.',
    "Wait... what?! Are you sure?? (Really!)",
    "E-mail john.doe@example.com or call +1 (555) 010-9999 for details.",
    "The price rose from $19.99 to $24.50 -- a 22.6% increase.",
    # 20-24: paragraphs
    "Large language models are trained on vast amounts of text. They learn statistical "
    "patterns of language, which lets them generate fluent continuations. However, they "
    "can also produce confident but incorrect statements, so outputs should be checked.",
    "The patient was admitted on March 3rd with a fever of 39.2 C. Blood tests showed "
    "elevated white cell counts. Antibiotics were started, and the fever resolved within "
    "48 hours. She was discharged on day five.",
    "Vulnerability: SQL injection in the login form.\nRisk: High -- attackers can read "
    "the users table.\nLocation: app/auth.py line 42.\nFix: use parameterized queries.",
    "To install the package, download the archive, extract it, and run the setup script. "
    "If the installation fails, check the log file for errors and try again with "
    "administrator rights.",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong and Buzz Aldrin walked on the "
    "surface while Michael Collins orbited above. The mission returned safely to Earth.",
    # 25-29: HTML-ish, entities, markup, quotes
    "<b>Bold</b> &amp; <i>italic</i> text &lt;here&gt;",
    "Use &quot;quotes&quot; and &amp;amp; carefully &amp;lt;tag&amp;gt;.",
    "<p class=\"note\">Don't forget: x < y && y > z</p>",
    "\u201cSmart quotes\u201d \u2014 and an ellipsis\u2026 plus \u20ac5 and \u00bd cup.",
    "Il \u00e9tait une fois, na\u00efve caf\u00e9 fa\u00e7ade \u2013 \u00fcber \u0130stanbul "
    "\u212aelvin \u00c5ngstr\u00f6m.",
    # 30-41: Chinese (Simplified)
    "\u7528\u4e24\u53e5\u8bdd\u89e3\u91ca\u5149\u5408\u4f5c\u7528\u3002",
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",
    "\u673a\u5668\u5b66\u4e60\u6a21\u578b\u5728\u8bad\u7ec3\u6570\u636e\u8f83\u5c11\u65f6\u5bb9\u6613\u8fc7\u62df\u5408\u3002",
    "\u4e1c\u4eac\u662f\u65e5\u672c\u7684\u9996\u90fd\uff0c\u4eba\u53e3\u8d85\u8fc7\u4e00\u5343\u4e07\u3002",
    "\u8bf7\u5728\u66f4\u65b0\u914d\u7f6e\u6587\u4ef6\u540e\u91cd\u542f\u670d\u52a1\u5668\u3002",
    "\u6c34\u5728\u6d77\u5e73\u9762\u7684\u6cb8\u70b9\u662f\u4e00\u767e\u6444\u6c0f\u5ea6\u3002",
    "\u4ed6\u8bf4\uff1a\u201c\u6211\u660e\u5929\u4e0b\u5348\u4e09\u70b9\u5230\u3002\u201d\u7136\u540e\u5c31\u8d70\u4e86\u3002",
    "\u5317\u4eac\u662f\u4e2d\u56fd\u7684\u9996\u90fd\uff0c\u4e5f\u662f\u653f\u6cbb\u548c\u6587\u5316\u4e2d\u5fc3\u3002",
    "\u8fd9\u5bb6\u516c\u53f8\u5728\u0032\u0030\u0032\u0033\u5e74\u62db\u8058\u4e861,000\u540d\u65b0\u5458\u5de5\uff0c\u589e\u957f\u4e8612.5%\u3002",
    "\u5706\u5468\u7387\u7ea6\u7b49\u4e8e3.14\uff0c\u81ea\u7136\u5e38\u6570\u7ea6\u7b49\u4e8e2.718\u3002",
    "\u4eba\u5de5\u667a\u80fd\u6b63\u5728\u6539\u53d8\u6211\u4eec\u7684\u751f\u6d3b\u65b9\u5f0f\uff1a\u4ece\u533b\u7597\u5230\u4ea4\u901a\uff0c\u65e0\u5904\u4e0d\u5728\u3002",
    "\u6f0f\u6d1e\uff1aSQL\u6ce8\u5165\u3002\u98ce\u9669\uff1a\u9ad8\u3002\u4f4d\u7f6e\uff1a\u767b\u5f55\u8868\u5355\u3002\u4fee\u590d\uff1a\u4f7f\u7528\u53c2\u6570\u5316\u67e5\u8be2\u3002",
    # 42-47: mixed Chinese/English and other CJK scripts
    "\u4ec0\u4e48\u662fSQL\u6ce8\u5165\uff1f",
    "\u6211\u4eec\u7528PyTorch\u8bad\u7ec3\u4e86\u4e00\u4e2aTransformer\u6a21\u578b\uff0cbatch size\u662f32\u3002",
    "\u8bf7\u8fd0\u884c pip install numpy==1.26.4 \u7136\u540e\u91cd\u8bd5\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c\uff01\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002",
    "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57",
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4, \ubc18\uac11\uc2b5\ub2c8\ub2e4.",
    # 48-53: code
    "def reverse(s):\n    return s[::-1]\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "fn main() {\n\tprintln!(\"{}\", x.len());\n}",
    '{"name": "tunelab", "version": "0.1.0", "tags": ["eval", "rust"]}',
    "if x == 3.14 and y != -1: print(f'{x:.2f}')",
    # 54-59: short texts and odd Unicode / whitespace
    "yes",
    "No.",
    "Hello world",
    "ok ok ok ok ok",
    "tab\tseparated\u00a0nbsp\u3000ideographic\u2009thin   spaces\r\nCRLF",
    "emoji \U0001f600 and astral han \U00020000\U00020001 and ext-a \u3400 done",
]

# Hand-written paraphrases / partial rewrites of some base texts: (base index, candidate).
PARAPHRASES = [
    (0, "A fast brown fox leaps over a lazy dog."),
    (1, "The cat was sitting on the mat, looking out the window."),
    (2, "Plants turn light energy into chemical energy kept in glucose."),
    (3, "Paris is the capital and the largest city of France."),
    (4, "At sea level, water boils at 100 C."),
    (6, "When training data is limited, ML models may overfit."),
    (7, "Restart the server once the config file has been updated."),
    (10, "Rust provides memory safety with no garbage collector."),
    (13, "e is about 2.718 and pi is about 3.14159."),
    (14, "In 2023 the firm took on 1000 new staff, 12.5 % more than in 2022."),
    (16, "He said he would be there at 5 pm, then left."),
    (20, "Large language models learn patterns from huge text corpora and can write fluent "
         "text, but they sometimes state wrong facts confidently, so check their output."),
    (22, "Vulnerability: SQL injection.\nRisk: High.\nLocation: app/auth.py:42\n"
         "Fix: parameterized queries."),
    (25, "<b>Bold</b> & <i>italic</i> text <here>"),
    (30, "\u7528\u4e24\u53e5\u8bdd\u8bf4\u660e\u5149\u5408\u4f5c\u7528\u662f\u4ec0\u4e48\u3002"),
    (31, "\u5929\u6c14\u4e0d\u9519\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u8d70\u8d70\u5427\uff01"),
    (32, "\u8bad\u7ec3\u6570\u636e\u5c11\u7684\u65f6\u5019\uff0c\u673a\u5668\u5b66\u4e60\u6a21\u578b\u5f88\u5bb9\u6613\u8fc7\u62df\u5408\u3002"),
    (33, "\u65e5\u672c\u7684\u9996\u90fd\u662f\u4e1c\u4eac\uff0c\u4eba\u53e3\u591a\u4e8e\u4e00\u5343\u4e07\u3002"),
    (37, "\u4e2d\u56fd\u7684\u9996\u90fd\u662f\u5317\u4eac\u3002"),
    (39, "\u03c0\u22483.14\uff0ce\u22482.718\u3002"),
    (42, "SQL\u6ce8\u5165\u662f\u4ec0\u4e48\uff1f"),
    (43, "\u6211\u4eec\u7528 PyTorch \u8bad\u7ec3\u4e86 Transformer \u6a21\u578b\uff0c\u6279\u5927\u5c0f 32\u3002"),
    (45, "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3002\u4eca\u65e5\u306f\u5929\u6c17\u304c\u3044\u3044\u3002"),
    (48, "def reverse(text):\n    return ''.join(reversed(text))\n"),
    (50, "SELECT name, count(*) FROM users WHERE age > 17 GROUP BY name"),
]

# Hand-written edge cases: (reference, candidate).
EDGE = [
    ("", ""),
    ("The cat sat.", ""),
    ("", "The cat sat."),
    ("cat", "cat"),
    ("cat", "dog"),
    ("cat", "the cat"),
    ("the cat", "cat"),
    ("a b", "a b"),
    ("a b c", "a b c"),
    ("a b c", "c b a"),
    ("a b c d", "a b c d e"),
    ("a b c d e", "a b c d"),
    ("the the the the", "the"),
    ("the", "the the the the"),
    ("...", "..."),
    ("!!!", "???"),
    (" ", " "),
    ("\n\t", "word"),
    ("3.14", "3.14"),
    ("3.14", "3,14"),
    ("1,000", "1000"),
    ("-5", "- 5"),
    ("5-3", "5 - 3"),
    (".5 is half", "0.5 is half"),
    ("x.y,z", "x . y , z"),
    ("end.", "end ."),
    ("a.. b,, c", "a . . b , , c"),
    ("well-known state-of-the-art", "well known state of the art"),
    ("<skipped> text", "text"),
    ("line-\nbreak", "linebreak"),
    ("&quot;hi&quot;", '"hi"'),
    ("&amp;lt;", "<"),
    ("CAPS LOCK", "caps lock"),
    ("\u4e2d", "\u4e2d"),
    ("\u4e2d\u6587", "\u6587\u4e2d"),
    ("\u4e2d", ""),
    ("", "\u4e2d\u6587"),
    ("\u4e2dx", "x\u4e2d"),
    (".5\u4e2d", ".5 \u4e2d"),
    ("\u4e2d\u6587\u2014\u201c\u5f15\u53f7\u201d\u2026\u20ac\u00bd", "\u4e2d\u6587 \u2014 \u201c \u5f15\u53f7 \u201d \u2026"),
    ("\U00020000\U00020001\u4e2d", "\U00020000 \U00020001 \u4e2d"),
    ("\u3072\u3089\u304c\u306a", "\u3072\u3089 \u304c\u306a"),
    ("\uac00\ub098\ub2e4", "\uac00 \ub098\ub2e4"),
    ("\uff21\uff22\uff23\uff0c\uff11\uff12\uff13\u3002", "ABC,123."),
    ("sep\x1cfile\x1dgroup", "sep file group"),
    ("\u0130stanbul \u212aelvin", "i stanbul kelvin"),
    ("\u4e2d\u6587&amp;\u82f1\u6587", "\u4e2d\u6587&\u82f1\u6587"),
    ("\u4e2d\u6587\n\u6362\u884c", "\u4e2d\u6587 \u6362\u884c"),
    ("  leading and trailing  ", "leading and trailing"),
    ("Vulnerability: X\nRisk: Y\nLocation: Z\nFix: W", "Vulnerability: X Risk: Y Location: Z Fix: W"),
]

# Filler texts for "no overlap" candidates.
UNRELATED = [
    "Zebras graze quietly beneath acacia trees.",
    "Quantum chromodynamics governs strong interactions.",
    "\u9a6c\u5728\u8349\u539f\u4e0a\u5954\u8dd1\u3002",
    "Jazz musicians improvise melodic variations.",
    "\u84dd\u8272\u7684\u6d77\u6d0b\u975e\u5e38\u8fbd\u9614\u3002",
]


def has_cjk(text):
    return any("\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or ch > "\uffff"
               for ch in text)


def units(text):
    """Perturbation units: whitespace words, or characters for CJK text without spaces."""
    if has_cjk(text) and " " not in text.strip():
        return list(text), ""
    return text.split(" "), " "


def drop(rng, text, frac):
    parts, sep = units(text)
    kept = [p for p in parts if rng.random() >= frac]
    return sep.join(kept or parts[:1])


def shuffle(rng, text):
    parts, sep = units(text)
    rng.shuffle(parts)
    return sep.join(parts)


def repeat(rng, text):
    parts, sep = units(text)
    i = rng.randrange(len(parts))
    return sep.join(parts[: i + 1] + [parts[i]] * rng.randint(1, 3) + parts[i + 1:])


def truncate(rng, text):
    parts, sep = units(text)
    return sep.join(parts[: rng.randint(1, 3)])


def punctuate(rng, text):
    marks = [",", ".", "!", "?", ";", ":", "--", "...", "'", '"', "(", ")"]
    parts, sep = units(text)
    out = []
    for p in parts:
        out.append(p)
        if rng.random() < 0.35:
            out.append(rng.choice(marks))
    return sep.join(out)


def recase(rng, text):
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def splice(rng, text, other):
    a, sep = units(text)
    b, _ = units(other)
    cut_a, cut_b = rng.randint(1, len(a)), rng.randint(0, len(b))
    return sep.join(a[:cut_a] + b[cut_b:])


def build():
    rng = random.Random(SEED)
    pairs = [(BASE[i], cand) for i, cand in PARAPHRASES]
    pairs += EDGE
    ops = ["identical", "drop", "drop_heavy", "shuffle", "repeat", "truncate",
           "punctuate", "recase", "splice", "unrelated"]
    k = 0
    while len(pairs) < TARGET:
        ref = BASE[k % len(BASE)]
        op = ops[(k // len(BASE) + k) % len(ops)]
        if op == "identical":
            cand = ref
        elif op == "drop":
            cand = drop(rng, ref, 0.2)
        elif op == "drop_heavy":
            cand = drop(rng, ref, 0.6)
        elif op == "shuffle":
            cand = shuffle(rng, ref)
        elif op == "repeat":
            cand = repeat(rng, ref)
        elif op == "truncate":
            cand = truncate(rng, ref)
        elif op == "punctuate":
            cand = punctuate(rng, ref)
        elif op == "recase":
            cand = recase(rng, ref)
        elif op == "splice":
            cand = splice(rng, ref, BASE[rng.randrange(len(BASE))])
        else:
            cand = UNRELATED[rng.randrange(len(UNRELATED))]
        if rng.random() < 0.5:
            pairs.append((ref, cand))
        else:
            pairs.append((cand, ref))
        k += 1
    return pairs


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "pairs.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for i, (ref, cand) in enumerate(build()):
            f.write(json.dumps({"id": i, "reference": ref, "candidate": cand},
                               ensure_ascii=False) + "\n")
    print(f"wrote {TARGET} pairs to {out}")


if __name__ == "__main__":
    main()
