"""Record llama.cpp (llama-cpp-python) greedy chat completions, for information.

For each prompt: create_chat_completion(user prompt, temperature=0, max_tokens=32) with
seed 0 and n_threads 2 (the model's own GGUF chat template), recording the text and the
ids obtained by re-tokenizing that text ("ids", special=True). It also records exact greedy
ids from a direct token loop (Llama.generate with temp=0) on the HF-formatted prompt, so
they can be compared id-by-id with hf_greedy.json (llama.cpp runs the Q4_1 weights with
quantized activations, so drift from the f32 HF reference after a few tokens is expected).

usage: python record_llamacpp_greedy.py MODEL.gguf OUT.json PROMPT [PROMPT ...]
"""
import json, sys

from llama_cpp import Llama

MAX_TOKENS = 32


def main():
    model, out_path, prompts = sys.argv[1], sys.argv[2], sys.argv[3:]
    llm = Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, seed=0, verbose=False)
    eos = llm.token_eos()
    rows = []
    for p in prompts:
        msgs = [{"role": "user", "content": p}]
        r = llm.create_chat_completion(messages=msgs, max_tokens=MAX_TOKENS, temperature=0.0, seed=0)
        text = r["choices"][0]["message"]["content"]
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

        # Direct greedy loop on the same chat-formatted prompt as hf_greedy_reference.py.
        prompt_text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                       "Hugging Face<|im_end|>\n<|im_start|>user\n" + p + "<|im_end|>\n<|im_start|>assistant\n")
        prompt_ids = llm.tokenize(prompt_text.encode("utf-8"), add_bos=False, special=True)
        gen = []
        for t in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
            gen.append(int(t))
            if t == eos or len(gen) >= MAX_TOKENS:
                break
        rows.append({
            "prompt": p,
            "text": text,
            "ids": ids,
            "finish_reason": r["choices"][0]["finish_reason"],
            "completion_tokens": r["usage"]["completion_tokens"],
            "prompt_tokens": r["usage"]["prompt_tokens"],
            "direct_prompt_ids": prompt_ids,
            "direct_greedy_ids": gen,
            "direct_greedy_text": llm.detokenize(gen, special=True).decode("utf-8", errors="replace"),
        })
        print(f"{p!r}: {text!r}", file=sys.stderr)
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(rows, fh, ensure_ascii=False, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
