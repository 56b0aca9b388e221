"""PEFT's side of tunelab's adapter round trip (run by evalsuite/tests/peft_roundtrip.rs).

Loads the HF base directory tunelab wrote, then
  1. applies tunelab's adapter with PeftModel.from_pretrained and records the logits;
  2. trains a PEFT adapter for a few steps on the same ids (rsLoRA, a subset of targets,
     no dropout), saves it with save_pretrained for tunelab to load, and records its logits.
Logits (and the base's, for the adapters' effect) go to one safetensors file.

usage: roundtrip.py BASE_DIR TUNELAB_ADAPTER PEFT_OUT IDS_JSON RESULT.safetensors
"""
import json
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def main():
    base_dir, tunelab_adapter, peft_out, ids_json, result = sys.argv[1:6]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    ids = torch.tensor([json.loads(open(ids_json).read())])

    def base():
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()

    with torch.no_grad():
        base_logits = base()(ids).logits[0]
        tunelab_logits = PeftModel.from_pretrained(base(), tunelab_adapter).eval()(ids).logits[0]

    model = get_peft_model(base(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=True,
                                              target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(6):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        peft_logits = model(ids).logits[0]
    model.save_pretrained(peft_out)
    save_file({"base": base_logits.contiguous(), "tunelab_adapter": tunelab_logits.contiguous(), "peft_trained": peft_logits.contiguous()}, result)


if __name__ == "__main__":
    main()
