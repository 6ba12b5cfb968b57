#!/usr/bin/env bash
# Builds, on this machine, everything scripts/gpu-window.sh runs on a GPU machine (which may have
# no Catch2, no network and no .git), and packs it into the one file that travels:
#   scripts/gpu-bundle.sh [DEST]      (default .carry/bin; .carry/ is git-ignored)
# writes the folder DEST and DEST.tgz. Only DEST.tgz needs to travel (the device tool's `carry`
# takes [".carry/bin.tgz"]; the working tree, scripts and bench/peers included, travels anyway).
# The .tgz holds (22 MiB for the "default" preset here; the script fails above KILN_BUNDLE_MAX_MIB,
# default 60, since at most 64 MiB travel with the working tree):
#   libkiln.so*, libkiln_mpi.so   the library (and its MPI rendezvous plugin, when built)
#   kiln_gpu_tests                the GPU tests (the CPU tests ran here)
#   train_gpt, generate, kiln_info, kiln_tokenize, bench_*
#   COMMIT                        the commit built (git rev-parse --short=12 HEAD, "-dirty" if so)
#   AREAS                         "area weight" lines: the GPU test areas and their source sizes
#                                 (scripts/gpu-areas.sh), the window's heaviest-first order
#   data/                         token shards of the fortunes (GPT-2 BPE when data/gpt2 holds
#                                 its vocabulary, else bytes) for the window's trainer run
# KILN_BUNDLE_PRESET picks the build (default "hopper": sm_90a and the sm_80 kernels built for
# it, the fastest build for an H100/H200; "default" adds sm_80/sm_90 code for other GPUs).
# KILN_BUNDLE_SKIP_BUILD=1 packs the preset's existing build as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.carry/bin}
preset=${KILN_BUNDLE_PRESET:-hopper}
max_mib=${KILN_BUNDLE_MAX_MIB:-60}
build=$(python3 -c "import json,sys; p={c['name']:c for c in json.load(open('CMakePresets.json'))['configurePresets']}; n=sys.argv[1]; b=p[n].get('binaryDir') or p[p[n]['inherits']]['binaryDir']; print(b.replace('\${sourceDir}/',''))" "$preset")

if [ "${KILN_BUNDLE_SKIP_BUILD:-0}" != 1 ]; then
  scripts/setup.sh
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "${KILN_JOBS:-$(nproc)}"
fi

rm -rf "$dest"
mkdir -p "$dest"
cp -P "$build"/libkiln.so* "$dest/"
cp "$build"/libkiln_mpi.so "$dest/" 2>/dev/null || true  # the MPI rendezvous plugin, if built
cp "$build"/tests/kiln_gpu_tests "$dest/"
cp "$build"/python_free_demos/* "$dest/" 2>/dev/null || true
find "$dest" -maxdepth 1 -type f ! -name '*.so*' ! -perm -u+x -delete
cp "$build"/bench/bench_* "$dest/" 2>/dev/null || true
strip --strip-debug "$dest"/* 2>/dev/null || true

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
echo "$commit" >"$dest/COMMIT"
scripts/gpu-areas.sh tests/gpu >"$dest/AREAS"

# The trainer's data: a few hundred thousand tokens are plenty for 20 steps of 8 x 1024.
tokenizer=(--tokenizer byte)
[ -f data/gpt2/encoder.json ] && tokenizer=(--tokenizer gpt2 --vocab-dir data/gpt2)
corpus=/usr/share/games/fortunes
if [ -d "$corpus" ] && [ -x "$dest/kiln_tokenize" ]; then
  "$dest/kiln_tokenize" "${tokenizer[@]}" --separator % --val-fraction 0.05 --quiet \
    --out "$dest/data" "$corpus" || echo "warning: no trainer data (kiln_tokenize failed)" >&2
else
  echo "warning: no trainer data ($corpus or kiln_tokenize missing): the window's trainer fails" >&2
fi

tar czf "$dest.tgz" -C "$(dirname "$dest")" "$(basename "$dest")"
du -sh "$dest" "$dest.tgz"
size_mib=$(( $(stat -c %s "$dest.tgz") / 1048576 ))
if [ "$size_mib" -gt "$max_mib" ]; then
  echo "error: $dest.tgz is $size_mib MiB, over $max_mib MiB: it would not travel" >&2
  exit 1
fi
echo "bundle $dest.tgz: commit $commit, $(wc -l <"$dest/AREAS") GPU test areas, $size_mib MiB"
