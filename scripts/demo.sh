#!/usr/bin/env bash
# The main job (README). For now: build kiln and describe the machine with kiln_info.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target kiln_info
build/python_free_demos/kiln_info
