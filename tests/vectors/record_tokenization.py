"""Record tokenization reference vectors: HF transformers vs llama.cpp (llama-cpp-python).

For each test string it records the HF ids (`tok(s, add_special_tokens=False).input_ids`,
which parses special-token text such as "<|im_start|>" as special tokens), the llama.cpp ids
with special=True (special text parsed) and special=False (special text tokenized as plain
text), the HF decode of the HF ids, and whether HF and llama.cpp (special=True) agree.

usage: python record_tokenization.py MODEL.gguf OUT.json
"""
import json, os, sys

from transformers import AutoTokenizer
import llama_cpp

TEXTS = [
    # English
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Explain photosynthesis in two sentences.",
    "don't I'll we're they've she'd it's O'Neil's",
    "HELLO World hElLo",
    # CJK
    "用两句话解释光合作用。",
    "什么是SQL注入？",
    "东京是日本的首都，人口超过一千万。",
    "こんにちは、世界！今日はいい天気ですね。",
    "カタカナとひらがなと漢字",
    "안녕하세요 세계",
    # code
    "def reverse(s):\n    return s[::-1]\n",
    "class Foo:\n\tdef bar(self):\n\t\treturn 42\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT COUNT(*) FROM users WHERE id > 10;",
    # numbers
    "12345 3.14159 1,000,000",
    "0 1 22 333 4444 55555 666666",
    "Version 2.0.1-rc3 released on 2024-01-15 at 13:45.",
    # emoji / symbols
    "👍🏽 🎉",
    "I ❤️ Rust 🦀!",
    "αβγ δ ∑∫√ ≠ ≤ ∞ €£¥",
    # whitespace
    "a   b\n\n\n  c",
    "   leading and trailing spaces   ",
    "\t\t",
    " ",
    "\n",
    "line1\r\nline2\r\n",
    # urls / emails
    "https://example.com/path?q=1&lang=en#frag",
    "mailto:someone@example.org and www.test.io/a_b-c",
    # punctuation
    "!!!??? ... --- *** ((()))",
    "\"quoted\" 'single' `backtick` [brackets] {braces} <angle>",
    # empty
    "",
    # special tokens
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|im_start|",
    # mixed
    "English 中文 日本語 mixed 123 😀",
]


def main():
    model = sys.argv[1]
    out_path = sys.argv[2]
    d, f = os.path.split(os.path.abspath(model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    rows = []
    for s in TEXTS:
        hf = tok(s, add_special_tokens=False).input_ids
        lc = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
        lc_ns = llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
        rows.append({
            "text": s,
            "hf_ids": hf,
            "llamacpp_ids": lc,
            "llamacpp_ids_nospecial": lc_ns,
            "hf_decode": tok.decode(hf),
            "hf_decode_roundtrip": tok.decode(hf) == s,
            "agree": hf == lc,
        })
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(rows, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    bad = [r for r in rows if not r["agree"]]
    print(f"{len(rows)} strings, {len(bad)} disagreements", file=sys.stderr)
    for r in bad:
        print(f"  DISAGREE {r['text']!r}: hf={r['hf_ids']} llamacpp={r['llamacpp_ids']}", file=sys.stderr)
    im = tok.convert_tokens_to_ids("<|im_start|>")
    print(f"<|im_start|> id={im}; HF ids for '<|im_start|>user': "
          f"{tok('<|im_start|>user', add_special_tokens=False).input_ids}", file=sys.stderr)


if __name__ == "__main__":
    main()
