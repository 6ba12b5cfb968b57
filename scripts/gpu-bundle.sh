#!/usr/bin/env bash
# Builds, on this machine, everything scripts/gpu-check.sh runs, and gathers it into one small
# folder that can travel to a GPU machine (which may have no Catch2 or network):
#   scripts/gpu-bundle.sh [DEST]      (default .carry/bin; .carry/ is git-ignored)
# writes the folder DEST and DEST.tgz, the same files compressed (about a third of the size: device
# code compresses well), which is what should travel when a transfer limit applies. Then, there:
#   KILN_BIN_DIR=.carry/bin.tgz scripts/gpu-check.sh OUTDIR     (or the folder itself)
# KILN_BUNDLE_PRESET picks the build (default "hopper": sm_90a only, the fastest build for an
# H100/H200 session; "default" adds sm_80 for other GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.carry/bin}
preset=${KILN_BUNDLE_PRESET:-hopper}
build=$(python3 -c "import json,sys; p={c['name']:c for c in json.load(open('CMakePresets.json'))['configurePresets']}; n=sys.argv[1]; b=p[n].get('binaryDir') or p[p[n]['inherits']]['binaryDir']; print(b.replace('\${sourceDir}/',''))" "$preset")

scripts/setup.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "${KILN_JOBS:-$(nproc)}"

rm -rf "$dest"
mkdir -p "$dest"
cp -P "$build"/libkiln.so* "$dest/"
cp "$build"/libkiln_mpi.so "$dest/" 2>/dev/null || true  # the MPI rendezvous plugin, if built
cp "$build"/tests/kiln_gpu_tests "$dest/"  # the CPU tests ran here: they need not travel
cp "$build"/python_free_demos/* "$dest/" 2>/dev/null || true
find "$dest" -maxdepth 1 -type f ! -name '*.so*' ! -perm -u+x -delete
cp "$build"/bench/bench_* "$dest/" 2>/dev/null || true
strip --strip-debug "$dest"/* 2>/dev/null || true
git rev-parse --short=12 HEAD >"$dest/COMMIT"
tar czf "$dest.tgz" -C "$(dirname "$dest")" "$(basename "$dest")"
du -sh "$dest" "$dest.tgz"
