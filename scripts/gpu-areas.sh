#!/usr/bin/env bash
# The GPU test areas: one "area bytes" line per area, by name, for gpu-bundle.sh's AREAS file and
# gpu-window.sh's plan (which runs each area's Catch2 tag [<area>], heaviest first).
#   scripts/gpu-areas.sh [TESTS_GPU_DIR]     (default: tests/gpu of this working tree)
# A file <area>_test.* names an area. A file <area>_<subject>_test.* (gemm_epilogue_test.cpp) is a
# part of the area <area> when <area>_test.* exists: its cases carry the tag [<area>]. Otherwise
# it names an area of its own (launch_check_test.cu). An area's weight is the size of its test
# files and of its helpers (<area>_support.*). tests/CMakeLists.txt applies the same rule to the
# ctest tests gpu.<area>.
set -euo pipefail
dir=${1:-$(dirname "$0")/../tests/gpu}
# The area a file stem belongs to: its shortest prefix (at an underscore) that names an area.
area_of() {
  local area=$1 p=$1
  while [[ $p == *_* ]]; do
    p=${p%_*}
    if compgen -G "$dir/${p}_test.*" >/dev/null; then area=$p; fi
  done
  echo "$area"
}
declare -A bytes=()
for f in "$dir"/*_test.*; do
  [ -e "$f" ] || continue
  stem=$(basename "$f"); stem=${stem%_test.*}
  bytes[$(area_of "$stem")]=0
done
for f in "$dir"/*; do
  [ -f "$f" ] || continue
  stem=$(basename "$f"); stem=${stem%%.*}; stem=${stem%_test}
  a=$(area_of "$stem")
  [ -n "${bytes[$a]+x}" ] || continue  # a helper of no area (paths.hpp, main.cpp)
  bytes[$a]=$((bytes[$a] + $(wc -c <"$f")))
done
for a in "${!bytes[@]}"; do echo "$a ${bytes[$a]}"; done | sort
