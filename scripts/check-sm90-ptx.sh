#!/usr/bin/env bash
# Reads the compiler's view of the sm_90a kernels, no GPU needed (bench/README.md, "Reading the
# compiler"):
#   scripts/check-sm90-ptx.sh [BUILD_DIR] [FILE.cu ...]
# For each Hopper source (default: every kernels/**/*_sm90.cu) it compiles for sm_90a with
# ptxas -v and prints, per kernel, registers and spills, then checks:
#   - no ptxas "wgmma serialization" notice (C7510 / C7520 ...: the wgmma pipeline is lost),
#   - no spill stores or loads,
#   - the PTX holds wgmma.mma_async and cp.async.bulk.tensor where the source uses them.
# BUILD_DIR (default build) is a configured build folder (for generated/include/kiln/version.h).
# Exit status: non-zero if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
[ -f "$build/generated/include/kiln/version.h" ] || {
  echo "no $build/generated/include/kiln/version.h: configure first (cmake --preset default)" >&2
  exit 2
}
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(find kernels -name '*_sm90.cu' | sort)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a -I. -Ikernels/include -Iruntime/include
       "-I$build/generated/include" --expt-relaxed-constexpr -DKILN_HAS_SM90A=1
       -DKILN_BUILDING_LIBRARY)
failed=0
for f in "${files[@]}"; do
  name=$(basename "$f" .cu)
  if ! nvcc "${flags[@]}" -Xptxas -v -c "$f" -o "$tmp/$name.o" >"$tmp/$name.log" 2>&1; then
    echo "FAIL $f: does not compile"; cat "$tmp/$name.log"; failed=1; continue
  fi
  nvcc "${flags[@]/code=sm_90a/code=compute_90a}" -ptx "$f" -o "$tmp/$name.ptx" 2>/dev/null
  kernels=$(grep -c "Compiling entry function" "$tmp/$name.log")
  serial=$(grep -c "C75[0-9][0-9]" "$tmp/$name.log")
  spills=$(grep -E "[1-9][0-9]* bytes spill (stores|loads)" -c "$tmp/$name.log")
  regs=$(grep -o "Used [0-9]* registers" "$tmp/$name.log" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
  wgmma=$(grep -c "wgmma.mma_async" "$tmp/$name.ptx")
  tma=$(grep -c "cp.async.bulk.tensor" "$tmp/$name.ptx")
  status=ok
  [ "$serial" -eq 0 ] || status=FAIL
  [ "$spills" -eq 0 ] || status=FAIL
  # A file that instantiates kernels from a header using wgmma must show wgmma in its PTX.
  if [ "$kernels" -gt 0 ] && [ "$wgmma" -eq 0 ] &&
     grep -q "Wgmma<\|wgmma_" "$f" $(grep -o '"kernels/[^"]*\.cuh"' "$f" | tr -d '"') 2>/dev/null
  then status=FAIL; fi
  echo "$status $f: $kernels kernels, registers:$regs wgmma.mma_async x$wgmma," \
       "cp.async.bulk.tensor x$tma, serialization notices $serial, spilling kernels $spills"
  [ "$serial" -eq 0 ] || grep "C75[0-9][0-9]" "$tmp/$name.log" | sed 's/^/    /'
  [ "$status" = ok ] || failed=1
done
exit $failed
