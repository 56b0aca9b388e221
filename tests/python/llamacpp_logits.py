"""llama.cpp's last-position logits for token ids, with an optional GGUF LoRA adapter
(an oracle for `tunelab export gguf-lora`), through llama-cpp-python.

usage: llamacpp_logits.py MODEL.gguf (LORA.gguf | -) IDS_JSON
Prints the logits after the last id as a JSON list.
"""
import json
import sys

import numpy as np
from llama_cpp import Llama


def main():
    model, lora, ids_json = sys.argv[1:4]
    ids = json.loads(open(ids_json).read())
    # f32 keys and values (GGML_TYPE_F32 = 0), so an f32 model runs in f32 throughout.
    kwargs = dict(model_path=model, n_ctx=512, n_threads=2, verbose=False, logits_all=True, type_k=0, type_v=0)
    if lora != "-":
        kwargs["lora_path"] = lora
    llm = Llama(**kwargs)
    llm.eval(ids)
    print(json.dumps(np.asarray(llm.scores[len(ids) - 1]).tolist()))


if __name__ == "__main__":
    main()
