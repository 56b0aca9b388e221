"""HF transformers' logits for a model directory (an oracle for tunelab's HF loader).

usage: hf_logits.py MODEL_DIR IDS_JSON OUT.safetensors
Writes {"logits": [T, vocab]} for the ids, in f32 on the CPU.
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def main():
    model_dir, ids_json, out = sys.argv[1:4]
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([json.loads(open(ids_json).read())])
    with torch.no_grad():
        logits = model(ids).logits[0]
    save_file({"logits": logits.contiguous()}, out)


if __name__ == "__main__":
    main()
