#!/usr/bin/env bash
# Records the three runs the gate and report tests read (no test trains anything):
#   base      SmolLM2-135M-Instruct on the demo suite (--limit per category)
#   adapter   the same model with a LoRA adapter trained on the demo's train.jsonl
#   degraded  the adapter's outputs, except that every guard answer is replaced by a
#             security report (an adapter that forgot how to answer anything else),
#             scored from a predictions file
# usage: evalsuite/tests/vectors/runs/gate/record.sh   (from the repository root; takes
# about 10 minutes on 2 cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/../../../../.." && pwd)
cd "$root"
here=evalsuite/tests/vectors/runs/gate
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tunelab/target}
tunelab="$CARGO_TARGET_DIR/release/tunelab"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
data=examples/security-audit
work=$(mktemp -d)
# The quickstart's settings (scripts/quickstart) and the whole suite.
epochs=${EPOCHS:-1}
lr=${LR:-2e-4}
limit=${LIMIT:-1000}

"$tunelab" train --model "$model" --data "$data/train.jsonl" --out "$work/adapter" --epochs "$epochs" --lr "$lr" --batch-size 2 --grad-accum 2
common=(--suite "$data/suite.toml" --limit "$limit" --max-tokens 160 --out "$work/runs")
"$tunelab" eval run "${common[@]}" --model "$model" --name base
"$tunelab" eval run "${common[@]}" --model "$model" --adapter "$work/adapter" --name adapter
python3 - "$work/runs/adapter/results.csv" "$work/degraded.jsonl" <<'PY'
import csv, json, sys
seen, out = set(), open(sys.argv[2], "w", encoding="utf-8")
report = "Vulnerability: SQL injection\nRisk: High\nLocation: line 1\nFix: Use parameterized queries."
for row in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    if row["case_id"] in seen:
        continue
    seen.add(row["case_id"])
    text = report if row["category"] == "guard" else row["output"]
    out.write(json.dumps({"id": row["case_id"], "output": text}, ensure_ascii=False) + "\n")
PY
"$tunelab" eval run "${common[@]}" --predictions "$work/degraded.jsonl" --name degraded
for run in base adapter degraded; do
  rm -rf "${here:?}/$run"
  mkdir -p "$here/$run"
  # run.json, results.parquet and, for the adapter, its trainer_log.jsonl (not the CSV copy).
  find "$work/runs/$run" -maxdepth 1 -type f ! -name results.csv -exec cp {} "$here/$run/" \;
done
"$tunelab" eval summary "$here/base" "$here/adapter" "$here/degraded"
rm -rf "$work"
