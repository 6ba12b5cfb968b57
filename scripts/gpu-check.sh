#!/usr/bin/env bash
# Everything a GPU machine should run, in one go (issue "GPU verification"):
#   scripts/gpu-check.sh OUTDIR [STAGE ...]
# Stages, in order (default: all): info tests sanitize bench peers report
#   info      nvidia-smi and kiln_info
#   tests     every GPU test area (tests/gpu/<area>_test.*), one JUnit file each
#   sanitize  compute-sanitizer memcheck, racecheck, synccheck, initcheck over the GPU tests, with
#             KILN_TEST_QUICK=1 (trimmed shapes); KILN_SANITIZE_TOOLS overrides the tool list
#   bench     every bench_* program (kernels and end-to-end), JSON lines in OUTDIR/bench.jsonl
#   peers     every bench/peers/*.py (PyTorch), JSON lines in OUTDIR/peers.jsonl
#   report    scripts/bench_report.py: OUTDIR/report.md and plots beside it
# Binaries: KILN_BIN_DIR (a folder made by scripts/gpu-bundle.sh, or its .tgz) if set, else the build folder
# KILN_BUILD_DIR (default build-hopper), configured and built with the "hopper" preset when
# missing. Each stage's log is OUTDIR/<stage>.log; OUTDIR/summary.md says what passed.
# Exit status: non-zero if any test or sanitizer run failed (benchmarks that fail are reported).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

[ $# -ge 1 ] || { sed -n '2,18p' "$0"; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(info tests sanitize bench peers report)

export KILN_GIT_COMMIT=${KILN_GIT_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
summary=$out/summary.md
[ -f "$summary" ] || printf '# kiln gpu-check\n\ncommit %s, %s\n\n' "$KILN_GIT_COMMIT" "$(date -u +%FT%TZ)" >"$summary"
failed=0
note() { echo "$*" | tee -a "$summary"; }

# The CUDA libraries: the toolkit's, and NVIDIA's Python wheels (cuDNN, NCCL, cuBLAS) where the
# machine has them only there.
wheel_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs.update(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${wheel_libs:+$wheel_libs:}${LD_LIBRARY_PATH:-}

if [ -n "${KILN_BIN_DIR:-}" ]; then
  if [ -f "$KILN_BIN_DIR" ]; then
    # The compressed bundle: unpacked outside OUTDIR, whose files travel back.
    unpacked=$(mktemp -d)
    tar xzf "$KILN_BIN_DIR" -C "$unpacked" || { note "cannot unpack $KILN_BIN_DIR"; exit 1; }
    KILN_BIN_DIR=$(find "$unpacked" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  fi
  bin=$(cd "$KILN_BIN_DIR" && pwd)
  export LD_LIBRARY_PATH=$bin:$LD_LIBRARY_PATH
  gpu_tests=$bin/kiln_gpu_tests
  kiln_info=$bin/kiln_info
  benches=("$bin"/bench_*)
else
  build=${KILN_BUILD_DIR:-build-hopper}
  if [ ! -f "$build/build.ninja" ]; then
    cmake --preset hopper -B "$build" >"$out/configure.log" 2>&1 || { note "configure failed: see configure.log"; exit 1; }
  fi
  cmake --build "$build" -j "$(nproc)" >"$out/build.log" 2>&1 || { note "build failed: see build.log"; exit 1; }
  gpu_tests=$build/tests/kiln_gpu_tests
  kiln_info=$build/python_free_demos/kiln_info
  benches=("$build"/bench/bench_*)
fi

# The test areas: tests/gpu/<area>_test.{cpp,cu}, each TEST_CASE tagged [<area>].
areas=()
for f in tests/gpu/*_test.cpp tests/gpu/*_test.cu; do
  [ -e "$f" ] || continue
  a=$(basename "$f"); a=${a%_test.*}; areas+=("$a")
done

for stage in "${stages[@]}"; do
  start=$(date +%s)
  case $stage in
    info)
      { nvidia-smi || true; echo; "$kiln_info"; } >"$out/info.log" 2>&1
      note "## info"; note '```'; sed -n '1,40p' "$out/info.log" | grep -v '^$' >>"$summary"; note '```'
      ;;
    tests)
      note "## GPU tests"
      mkdir -p "$out/tests"
      for a in "${areas[@]}"; do
        "$gpu_tests" "[$a]" -r junit -o "$out/tests/$a.xml" >>"$out/tests.log" 2>&1
        rc=$?
        counts=$(python3 -c "import sys,xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); s=r if r.tag=='testsuite' else r.find('testsuite'); print(s.get('tests'),s.get('failures'),s.get('errors'))" "$out/tests/$a.xml" 2>/dev/null)
        if [ $rc -eq 0 ]; then note "- $a: passed ($counts tests/failures/errors)";
        elif [ $rc -eq 77 ]; then note "- $a: SKIPPED (no device)";
        else note "- $a: **FAILED** (exit $rc; $counts tests/failures/errors)"; failed=1; fi
      done
      ;;
    sanitize)
      note "## compute-sanitizer (KILN_TEST_QUICK=1)"
      tools=${KILN_SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}
      sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
      if [ -z "$sanitizer" ]; then note "- **NOT RUN**: compute-sanitizer not found"; failed=1; tools=""; fi
      for tool in $tools; do
        for a in "${areas[@]}"; do
          log=$out/sanitize-$tool.log
          echo "=== $tool [$a]" >>"$log"
          KILN_TEST_QUICK=1 "$sanitizer" --tool "$tool" --error-exitcode 99 \
            "$gpu_tests" "[$a]" >>"$log" 2>&1
          rc=$?
          if [ $rc -eq 0 ]; then note "- $tool [$a]: clean";
          elif [ $rc -eq 77 ]; then note "- $tool [$a]: SKIPPED (no device)";
          else note "- $tool [$a]: **FAILED** (exit $rc, see sanitize-$tool.log)"; failed=1; fi
        done
      done
      ;;
    bench)
      note "## benchmarks"
      quick=(); [ "${KILN_BENCH_QUICK:-0}" = 1 ] && quick=(--quick)
      for b in "${benches[@]}"; do
        [ -x "$b" ] || continue
        name=$(basename "$b")
        echo "=== $name" >>"$out/bench.log"
        "$b" --json "$out/bench.jsonl" "${quick[@]}" >>"$out/bench.log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then note "- $name: done"; elif [ $rc -eq 77 ]; then note "- $name: SKIPPED (no device)";
        else note "- $name: **FAILED** (exit $rc, see bench.log)"; fi
      done
      ;;
    peers)
      note "## PyTorch peers"
      quick=(); [ "${KILN_BENCH_QUICK:-0}" = 1 ] && quick=(--quick)
      for p in bench/peers/*.py; do
        [ "$(basename "$p")" = common.py ] && continue
        echo "=== $p" >>"$out/peers.log"
        PYTHONPATH=$root/bench/peers${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 \
          python3 "$p" --json "$out/peers.jsonl" "${quick[@]}" >>"$out/peers.log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then note "- $p: done"; elif [ $rc -eq 77 ]; then note "- $p: SKIPPED (no device)";
        else note "- $p: **FAILED** (exit $rc, see peers.log)"; fi
      done
      ;;
    report)
      python3 scripts/bench_report.py "$out" >"$out/report.log" 2>&1 \
        && note "## report: report.md" || note "## report: **FAILED** (see report.log)"
      ;;
    *)
      echo "unknown stage: $stage" >&2; exit 2 ;;
  esac
  echo "($stage: $(( $(date +%s) - start )) s)" >>"$summary"
done

exit $failed
