"""Records LLaMA-Factory's similarity metrics on pairs.jsonl (prediction = candidate,
label = reference), computed as LLaMA-Factory's `ComputeSimilarity` computes them
(src/llamafactory/train/sft/metric.py): jieba words scored by rouge_chinese for ROUGE-1/2/L,
NLTK sentence_bleu on characters with method3 smoothing for BLEU-4, each ×100 rounded to 4
decimals. Writes llamafactory_expected.jsonl and prints the versions and the means (what
predict_results.json would hold for these pairs).

Run from the repository root with a Python that has jieba, rouge-chinese and nltk:
    python tests/vectors/scorers/record_llamafactory_metrics.py
"""
import json
import sys
from importlib.metadata import version
from pathlib import Path

import jieba
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge

HERE = Path(__file__).resolve().parent


def scores(pred: str, label: str) -> dict:
    hypothesis = list(jieba.cut(pred))
    reference = list(jieba.cut(label))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
        result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
    else:
        result = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
    out = {k: round(v["f"] * 100, 4) for k, v in result.items()}
    bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
    out["bleu-4"] = round(bleu * 100, 4)
    return out


def main():
    jieba.setLogLevel(60)
    rows = []
    for line in (HERE / "pairs.jsonl").read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)
        rows.append({"id": pair["id"], **scores(pair["candidate"], pair["reference"])})
    with open(HERE / "llamafactory_expected.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    means = {k: sum(r[k] for r in rows) / len(rows) for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")}
    print(json.dumps({"versions": {p: version(p) for p in ("jieba", "rouge-chinese", "nltk")}, "pairs": len(rows), "means": means}), file=sys.stderr)


if __name__ == "__main__":
    main()
