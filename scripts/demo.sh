#!/usr/bin/env bash
# The main job (README): train a small GPT from scratch on a text corpus, then let it write.
#
#   scripts/demo.sh                  # Debian's fortunes (/usr/share/games/fortunes)
#   scripts/demo.sh my_text.txt      # any text file (or a directory of text files)
#
# Steps: build kiln and its demos, tokenize the corpus into byte-level token shards
# (kiln_tokenize), train with train_gpt (a GPT of 6 layers on the GPU for a few minutes when one
# is present, else a 2-layer GPT on the CPU backend for a few minutes on 2 cores), print the loss
# curve's file and generate a sample from the final checkpoint. Everything lands in build/demo/.
# Environment: KILN_DEMO_STEPS overrides the number of training steps; KILN_DEMO_PROMPT the prompt;
# KILN_DEMO_FAMILY=llama trains a Llama-family model instead (RMSNorm, rotary, SwiGLU, GQA: the
# presets llama-small on the GPU, llama-tiny on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

corpus=${1:-/usr/share/games/fortunes}
out=build/demo

scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target kiln_info kiln_tokenize train_gpt generate
bin=build/python_free_demos

if [ ! -e "$corpus" ]; then
  echo "demo: corpus '$corpus' does not exist (install Debian's fortunes, or name a text file)" >&2
  exit 1
fi
# Fortune files separate their entries with lines holding a single "%".
separator=()
case "$corpus" in
  */fortunes*) separator=(--separator %) ;;
esac
echo "== tokenizing $corpus"
"$bin/kiln_tokenize" --tokenizer byte --val-fraction 0.05 "${separator[@]}" --overwrite \
  --out "$out/data" "$corpus"

if "$bin/kiln_info" | grep -Eq '^devices: [1-9]'; then
  echo "== training on the GPU"
  preset=medium
  [ "${KILN_DEMO_FAMILY:-gpt}" = llama ] && preset=llama-small
  model=(--backend cuda --model "$preset" --max-seq-len 256 --batch 32 --seq-len 256 --lr 1e-3)
  steps=${KILN_DEMO_STEPS:-2000}
  cadence=(--log-every 50 --eval-every 250 --sample-every 1000)
else
  echo "== no GPU: training a tiny GPT on the CPU backend (a few minutes on 2 cores)"
  preset=tiny
  [ "${KILN_DEMO_FAMILY:-gpt}" = llama ] && preset=llama-tiny
  model=(--backend cpu --model "$preset" --batch 8 --seq-len 64 --lr 3e-3)
  steps=${KILN_DEMO_STEPS:-1200}
  cadence=(--log-every 50 --eval-every 300 --sample-every 600)
fi
rm -rf "$out/ckpt"
"$bin/train_gpt" --data "$out/data" "${model[@]}" --steps "$steps" "${cadence[@]}" \
  --sample-length 200 --checkpoint-dir "$out/ckpt" --metrics "$out/metrics.jsonl" \
  --plot "$out/loss.png"

echo "== generating from $out/ckpt/latest.ckpt"
"$bin/generate" --checkpoint "$out/ckpt/latest.ckpt" --prompt "${KILN_DEMO_PROMPT:-The }" \
  --length 400 --temperature 0.8 --top-k 40 --seed 7 --ignore-eot
echo "== done: loss curve $out/loss.png, metrics $out/metrics.jsonl, checkpoint $out/ckpt/latest.ckpt"
