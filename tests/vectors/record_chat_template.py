"""Record chat-template reference vectors (HF transformers) and raw GGUF metadata.

Writes:
  CHAT_OUT: list of {"messages", "add_generation_prompt", "text"} where text is
            tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=X).
  META_OUT: raw GGUF metadata: tokenizer.chat_template, special token ids (+ their token
            strings), tokenizer.ggml.pre/model/add_*, general.architecture, all llama.* keys.

usage: python record_chat_template.py MODEL.gguf CHAT_OUT.json META_OUT.json
"""
import json, os, sys

from gguf import GGUFReader
from transformers import AutoTokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Explain photosynthesis in two sentences."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "2+2 equals 4."},
     {"role": "user", "content": "And times 3?"}],
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "你是一个乐于助人的助手。"},
     {"role": "user", "content": "用两句话解释光合作用。"},
     {"role": "assistant", "content": "光合作用是植物利用光能把二氧化碳和水转化为葡萄糖的过程。它同时释放氧气。"},
     {"role": "user", "content": "什么是SQL注入？"}],
    [{"role": "user", "content": "Render {{ 1+1 }} and {% if x %}y{% endif %} literally, plus <b>html</b> & \"quotes\"."}],
    [{"role": "user", "content": "Write a Python function that reverses a string.\n\n```python\ndef f(s):\n\treturn s\n```"}],
    [{"role": "user", "content": ""}],
]


def field_value(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def main():
    model, chat_out, meta_out = sys.argv[1], sys.argv[2], sys.argv[3]
    d, f = os.path.split(os.path.abspath(model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)

    rows = []
    for msgs in CONVERSATIONS:
        for gen in (False, True):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            rows.append({"messages": msgs, "add_generation_prompt": gen, "text": text})
    with open(chat_out, "w", encoding="utf-8") as fh:
        json.dump(rows, fh, ensure_ascii=False, indent=1)
        fh.write("\n")

    r = GGUFReader(model)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    meta = {
        "general.architecture": field_value(r, "general.architecture"),
        "general.name": field_value(r, "general.name"),
        "general.file_type": field_value(r, "general.file_type"),
        "tokenizer.ggml.model": field_value(r, "tokenizer.ggml.model"),
        "tokenizer.ggml.pre": field_value(r, "tokenizer.ggml.pre"),
        "tokenizer.ggml.add_bos_token": field_value(r, "tokenizer.ggml.add_bos_token"),
        "tokenizer.ggml.add_eos_token": field_value(r, "tokenizer.ggml.add_eos_token"),
        "tokenizer.ggml.add_space_prefix": field_value(r, "tokenizer.ggml.add_space_prefix"),
        "tokenizer.ggml.n_tokens": len(tokens),
        "tokenizer.ggml.n_merges": len(r.fields["tokenizer.ggml.merges"].data),
        "special_token_ids": {},
        "special_token_text": {},
        "chat_template": field_value(r, "tokenizer.chat_template"),
        "llama": {},
    }
    for name, key in [("bos", "tokenizer.ggml.bos_token_id"), ("eos", "tokenizer.ggml.eos_token_id"),
                      ("pad", "tokenizer.ggml.padding_token_id"), ("unk", "tokenizer.ggml.unknown_token_id")]:
        v = field_value(r, key)
        meta["special_token_ids"][name] = v
        meta["special_token_text"][name] = None if v is None else tokens[v]
    # Control tokens (token_type 3) with their ids, e.g. <|im_start|>, <|im_end|>.
    types = r.fields["tokenizer.ggml.token_type"].contents()
    meta["control_tokens"] = {tokens[i]: i for i, t in enumerate(types) if t == 3}
    for k in r.fields:
        if k.startswith("llama."):
            meta["llama"][k] = field_value(r, k)
    with open(meta_out, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    print(f"{len(rows)} chat-template vectors; meta keys: {sorted(meta['llama'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
