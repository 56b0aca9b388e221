#!/usr/bin/env bash
# Regenerate every reference vector in this folder from Python (HF transformers, llama.cpp).
# Needs a venv with torch, transformers, accelerate, gguf, numpy, sentencepiece and
# llama-cpp-python (see README.md); set REFVENV to use another one.
# usage: tests/vectors/record-all.sh [MODEL.gguf]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REFVENV="${REFVENV:-$HOME/.cache/tunelab/refvenv}"
MODEL="${1:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
BENCH="${BENCH:-$ROOT/../shared/bench}"
[ -d "$BENCH" ] || BENCH=/work/shared/bench
PY="$REFVENV/bin/python"

PROMPTS=(
  "Explain photosynthesis in two sentences."
  "What is the capital of France?"
  "Give me three tips for staying focused while studying."
  "用两句话解释光合作用。"
  "什么是SQL注入？"
  "Write a Python function that reverses a string."
  "Write a SQL query that counts rows in a table named users."
)

"$REFVENV/bin/pip" list 2>/dev/null | grep -iE '^(torch|transformers|accelerate|gguf|numpy|tokenizers|llama_cpp_python|llama-cpp-python) ' >&2 || true

# 1. HF f32 greedy continuations (stdout saved verbatim).
nice -n 19 "$PY" "$BENCH/hf_greedy_reference.py" "$MODEL" --max-new 32 "${PROMPTS[@]}" > "$HERE/hf_greedy.json"
# 2. Tokenization: HF vs llama.cpp.
nice -n 19 "$PY" "$HERE/record_tokenization.py" "$MODEL" "$HERE/tokenization.json"
# 3. Chat template texts + raw GGUF metadata.
nice -n 19 "$PY" "$HERE/record_chat_template.py" "$MODEL" "$HERE/chat_template.json" "$HERE/gguf_meta.json"
# 4. llama.cpp greedy chat completions (informational).
nice -n 19 "$PY" "$HERE/record_llamacpp_greedy.py" "$MODEL" "$HERE/llamacpp_greedy.json" "${PROMPTS[@]}"
