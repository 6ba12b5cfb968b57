#!/usr/bin/env bash
# Builds kiln's fuzz targets (tests/fuzz/: libFuzzer with AddressSanitizer and
# UndefinedBehaviorSanitizer, compiled by clang in a configure of their own) and runs each for
# SECONDS on a corpus seeded by kiln's own writers (kiln_fuzz_seeds).
#   scripts/fuzz.sh [SECONDS]                       # default 60 s per target
#   KILN_FUZZ_TARGETS="fuzz_checkpoint" scripts/fuzz.sh 600
# Exit status 0: nothing found; 1: a target crashed, leaked, hung or allocated without bound (the
# input is saved as build-fuzz/crashes/<target>-crash-*; replay it with build-fuzz/<target> FILE);
# 77: skipped (no clang++ with libFuzzer here). The corpus grows in build-fuzz/corpus between runs.
# The test command runs it for 8 s per target (ctest test fuzz.short, label fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${KILN_FUZZ_BUILD:-build-fuzz}
cxx=${KILN_FUZZ_CXX:-clang++}
jobs=${KILN_JOBS:-$(nproc)}

skip() { echo "[kiln-skip] $*"; exit 77; }
command -v "$cxx" >/dev/null || skip "$cxx not found (Debian: clang): fuzzing skipped"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$probe/p.cpp"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>/dev/null ||
  skip "$cxx cannot build libFuzzer targets (-fsanitize=fuzzer): fuzzing skipped"

# The seed generator is part of the main build.
seeds_exe=${KILN_FUZZ_SEEDS_EXE:-build/tests/kiln_fuzz_seeds}
if [[ ! -x $seeds_exe ]]; then
  cmake --build build --target kiln_fuzz_seeds -j "$jobs"
fi

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S tests/fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" >/dev/null
cmake --build "$build" -j "$jobs"

rm -rf "$build/seeds"
"$seeds_exe" "$build/seeds"
mkdir -p "$build/crashes" "$build/logs"
targets=${KILN_FUZZ_TARGETS:-$(cd "$build" && ls fuzz_* | grep -v '\.' || true)}
failed=0
for t in $targets; do
  mkdir -p "$build/corpus/$t"
  [[ -d $build/seeds/$t ]] && cp -n "$build/seeds/$t"/* "$build/corpus/$t/" 2>/dev/null || true
  # Bounded memory: one allocation over 1 GiB, or 2 GiB in all, is a finding.
  if "$build/$t" -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
    "$build/corpus/$t" >"$build/logs/$t.log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$build/logs/$t.log" | grep -o '[0-9]*' || echo '?')
    echo "fuzz: $t: $runs runs in ${seconds} s, nothing found ($(ls "$build/corpus/$t" | wc -l) inputs in the corpus)"
  else
    echo "fuzz: $t FAILED (log: $build/logs/$t.log)"
    grep -E 'ERROR|SUMMARY|==[0-9]+==|runtime error|Test unit written' "$build/logs/$t.log" | head -20
    failed=1
  fi
done
exit $failed
