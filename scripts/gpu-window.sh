#!/usr/bin/env bash
# One GPU window (issue 12): everything a lent GPU machine should run, inside a time budget, with
# at most three files left in OUT however it ends:
#   scripts/gpu-window.sh OUT [BUDGET_S]          (default budget 540 s, for one 600 s call)
# Run from the repository root of the working tree that travelled, with the bundle made here by
# scripts/gpu-bundle.sh (KILN_BUNDLE, default .carry/bin.tgz; a folder works too).
#
# Stages, in priority order; each gets at most its cap (KILN_CAP_<STAGE>, seconds) and never more
# than the budget left, and a stage (or job) that cannot start in time is recorded as not_run:
#   preflight  unpack, ldd every binary, GPU, driver, clocks, library versions built vs loaded, commit
#   smoke      the [smoke] cases of every GPU test area, areas in parallel             (cap 60)
#   tests      every GPU test area, in parallel, heaviest first                        (cap 200)
#   trainer    GPT-2 124M on the cuda backend: loss starts near ln V and falls; tok/s, MFU (cap 60)
#   hfcheck    optional, on the CPU, only where python3 imports transformers: two tiny models
#              trained and exported as Hugging Face folders by the bundle's train_gpt, their logits
#              from generate against transformers' (scripts/hf_crosscheck.py)           (cap 45)
#   memcheck   compute-sanitizer memcheck on [smoke]~[api_error], kiln's kernels only    (cap 60)
#   racecheck  the same under racecheck                                                (cap 45)
#   bench      every bench_* with --quick, one at a time, then the PyTorch peers, slow ones last
# Every process runs under `timeout` (TERM, then KILL after KILN_GRACE_S, default 5 s); the GPU
# tests stream Catch2's XML reporter to a file, so a kill keeps the cases that ran. After every
# stage OUT is rewritten: results.tgz (logs, XML, JSON lines), summary.md and summary.json (commit
# from the bundle's COMMIT file, seed, environment, per job: stage, name, status
# pass/fail/timeout/not_run/skipped, seconds, failing test names). The non-passing rows are printed
# last, since only the end of the output may come back.
#
# Exit code 77 counts as "skipped" only when the program printed "[kiln-no-device]" and no GPU is
# present (nvidia-smi lists none); otherwise it is a failure.
#
# Environment:
#   KILN_BUNDLE       the bundle (.tgz or folder; default .carry/bin.tgz, else .carry/bin)
#   KILN_AREAS        GPU test areas to run (comma or space separated; default: the bundle's AREAS)
#   KILN_TEST_SPEC    Catch2 test spec appended to each area's tag in the tests stage, e.g. '~[slow]'
#   KILN_TEST_SEED    the tests' seed (default: drawn here, recorded in summary.json)
#   KILN_STAGES       stages to run (default: all, in the order above)
#   KILN_RERUN        a previous summary.json: runs only what failed or timed out there (its
#                     failing test cases when known), with KILN_SYNC_AFTER_LAUNCH=1, then memcheck
#                     on the same cases, then the failed benchmarks and trainer
#   KILN_PEERS_DIR    the PyTorch peers (default bench/peers)
#   KILN_SANITIZER_FILTER  compute-sanitizer's kernel filter (default "--kernel-name kns=kiln";
#                     empty: every kernel)
#   KILN_JOBS         parallel processes in the smoke, tests and sanitizer stages (default 8)
# Exit status: 0 when nothing failed or timed out (skipped and not_run rows do not fail), else 1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

[ $# -ge 1 ] || { sed -n '2,40p' "$0"; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
budget=${2:-540}
t0=$(date +%s)
deadline=$((t0 + budget))
reserve=${KILN_RESERVE_S:-8}  # kept back for the final packing
grace=${KILN_GRACE_S:-5}
jobs=${KILN_JOBS:-8}
report=$root/scripts/window_report.py

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-window.XXXXXX")
mkdir -p "$work/logs" "$work/xml" "$work/bench" "$work/trainer"
: >"$work/jobs.tsv"
# OUT is meant to be empty (the device tool's $OUT is): an earlier run's three files are replaced.
rm -f "$out/results.tgz" "$out/summary.md" "$out/summary.json"

now() { date +%s; }
say() { printf '[%4ds] %s\n' $(($(now) - t0)) "$*"; }
# One row of jobs.tsv: stage name rc seconds kind note (rc "-" for a job that did not run).
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$work/jobs.tsv"; }
pack() {
  # Logs are capped (head and tail kept) so results.tgz stays far under 16 MiB.
  find "$work" -type f -size +3M | while read -r f; do
    { head -c 1M "$f"; printf '\n[... cut by gpu-window.sh ...]\n'; tail -c 2M "$f"; } >"$f.cut"
    mv "$f.cut" "$f"
  done
  # Written beside the work folder, then moved: a kill mid-way leaves no fourth file in OUT.
  tar czf "$work.tgz" -C "$work" . 2>/dev/null && mv -f "$work.tgz" "$out/results.tgz"
  python3 "$report" summary "$work" "$out" >/dev/null 2>"$work/logs/report.err" || say "summary failed: $(tail -1 "$work/logs/report.err")"
}

# ---- the bundle -------------------------------------------------------------------------------
bundle=${KILN_BUNDLE:-}
if [ -z "$bundle" ]; then
  if [ -f .carry/bin.tgz ]; then bundle=.carry/bin.tgz; else bundle=.carry/bin; fi
fi
preflight_start=$(now)
if [ -f "$bundle" ]; then
  unpacked=$(mktemp -d "${TMPDIR:-/tmp}/kiln-bundle.XXXXXX")
  tar xzf "$bundle" -C "$unpacked" || { say "cannot unpack $bundle"; record preflight unpack 1 0 preflight "cannot unpack $bundle"; }
  bin=$(find "$unpacked" -mindepth 1 -maxdepth 1 -type d | head -n 1)
elif [ -d "$bundle" ]; then
  bin=$(cd "$bundle" && pwd)
else
  bin=""
  record preflight unpack 1 0 preflight "no bundle at $bundle (scripts/gpu-bundle.sh makes it)"
fi
[ -n "$bin" ] || bin=$work/empty-bundle
mkdir -p "$bin"
commit=$(cat "$bin/COMMIT" 2>/dev/null || git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
export KILN_GIT_COMMIT=$commit
seed=${KILN_TEST_SEED:-$((RANDOM << 15 | RANDOM))}
export KILN_TEST_SEED=$seed

# The CUDA libraries: the bundle's, the toolkit's, and NVIDIA's Python wheels where only they exist.
wheel_libs=$(timeout 10 python3 -c '
import glob, os, site
d = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    d.update(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
print(":".join(sorted(d)))' 2>/dev/null || true)
export LD_LIBRARY_PATH=$bin${wheel_libs:+:$wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

gpu_present=0
if timeout 10 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then gpu_present=1; fi
sanitizer=$(command -v compute-sanitizer || true)
[ -n "$sanitizer" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || sanitizer=/usr/local/cuda/bin/compute-sanitizer
{
  echo "commit=$commit"; echo "seed=$seed"; echo "budget_s=$budget"; echo "gpu_present=$gpu_present"
  echo "started=$(date -u +%FT%TZ)"; echo "host=$(hostname)"; echo "bundle=$bundle"
  echo "rerun=${KILN_RERUN:-}"; echo "test_spec=${KILN_TEST_SPEC:-}"; echo "sanitizer=${sanitizer:-none}"
} >"$work/env.txt"

# ---- the plan ---------------------------------------------------------------------------------
# Areas: the bundle's AREAS file ("area weight" lines, written by gpu-bundle.sh with
# scripts/gpu-areas.sh), else the working tree's tests/gpu by the same script; heaviest first.
if [ -f "$bin/AREAS" ]; then
  mapfile -t areas < <(sort -k2,2nr -k1,1 "$bin/AREAS" | awk 'NF {print $1}')
else
  mapfile -t areas < <(scripts/gpu-areas.sh tests/gpu | sort -k2,2nr -k1,1 | awk 'NF {print $1}')
fi
if [ -n "${KILN_AREAS:-}" ]; then
  want=" $(echo "$KILN_AREAS" | tr ',' ' ') "
  keep=(); for a in "${areas[@]}"; do [[ $want == *" $a "* ]] && keep+=("$a"); done
  areas=("${keep[@]}")
fi
mapfile -t benches < <(find -L "$bin" -maxdepth 1 -name 'bench_*' -type f -perm -u+x -printf '%f\n' | sort)
# Peers: plain ones first, those that compile (torch.compile: minutes) last.
peers_dir=${KILN_PEERS_DIR:-$root/bench/peers}
mapfile -t peers < <(for p in "$peers_dir"/*.py; do
  [ -e "$p" ] && [ "$(basename "$p")" != common.py ] && { grep -q 'torch.compile' "$p" && echo "1 $p" || echo "0 $p"; }
done | sort | awk '{print $2}')

stages=(preflight smoke tests trainer hfcheck memcheck racecheck bench)
[ -z "${KILN_STAGES:-}" ] || read -r -a stages <<<"$(echo "$KILN_STAGES" | tr ',' ' ')"
rerun_specs=()  # "stage<TAB>name<TAB>spec" rows from the previous summary
if [ -n "${KILN_RERUN:-}" ]; then
  mapfile -t rerun_specs < <(python3 "$report" rerun "$KILN_RERUN")
  export KILN_SYNC_AFTER_LAUNCH=1
  stages=(preflight tests trainer hfcheck memcheck bench)
  say "rerun of $KILN_RERUN: ${#rerun_specs[@]} jobs, KILN_SYNC_AFTER_LAUNCH=1"
fi
cap() {
  local v="KILN_CAP_${1^^}"
  case $1 in preflight) echo "${!v:-15}" ;; smoke) echo "${!v:-60}" ;; tests) echo "${!v:-200}" ;;
    trainer) echo "${!v:-60}" ;; hfcheck) echo "${!v:-45}" ;; memcheck) echo "${!v:-60}" ;; racecheck) echo "${!v:-45}" ;; *) echo "${!v:-100000}" ;; esac
}

# ---- jobs -------------------------------------------------------------------------------------
# Catch2's XML reporter flushes each test case's start and end: a kill keeps what ran.
catch_args() { catch=(-r xml -o "$work/xml/$1.xml" -d yes); }
# Runs one job (in the background, by run_pool) under timeout and records it.
# $1 stage, $2 name, $3 seconds allowed (TERM at $3, KILL $grace later), $4 Catch2 spec (tests)
start_job() {
  local stage=$1 name=$2 limit=$3 spec=${4:-} kind rc start log=$work/logs/$1.$2.log
  local -a cmd env=() catch
  catch_args "$stage.$name"
  case $stage in
    smoke | tests) kind="test"
      # The smoke set runs the tests' quick shapes (KILN_TEST_QUICK trims the largest).
      [ "$stage" = tests ] || env=(KILN_TEST_QUICK=1)
      cmd=("$bin/kiln_gpu_tests" "$spec" "${catch[@]}" -w NoTests) ;;
    memcheck | racecheck) kind=sanitizer
      env=(KILN_TEST_QUICK=1)
      local extra=(); [ "$stage" = memcheck ] && extra=(--report-api-errors no)
      local filter=()  # kiln's kernels only: cuBLASLt's and cuDNN's are not ours to judge
      read -r -a filter <<<"${KILN_SANITIZER_FILTER---kernel-name kns=kiln}"
      cmd=("$sanitizer" --tool "$stage" --error-exitcode 99 --print-limit 50 "${filter[@]}"
           "${extra[@]}" "$bin/kiln_gpu_tests" "$spec" "${catch[@]}") ;;
    trainer) kind=trainer
      cmd=(python3 "$report" trainer "$work/trainer" "$bin/train_gpt" --data "$bin/data" --model gpt2
           --backend cuda --batch 8 --seq-len 1024 --steps 20 --log-every 1 --eval-every 0
           --sample-every 0 --lr 6e-4 --warmup 2) ;;
    hfcheck) kind=hfcheck
      # The folders (tens of MB) stay out of results.tgz.
      cmd=(python3 "$root/scripts/hf_crosscheck.py" --make "$bin" "$bin/data" "$work.hf") ;;
    bench) kind=bench
      if [[ $name == peer-* ]]; then
        cmd=(env "PYTHONPATH=$peers_dir${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 python3
             "$peers_dir/${name#peer-}.py" --quick --json "$work/bench/peers.jsonl")
      else
        cmd=("$bin/$name" --quick --json "$work/bench/bench.jsonl")
      fi ;;
  esac
  start=$(now)
  set +e
  # The braces take the shell's own "Segmentation fault" notice into the log too.
  { env "${env[@]}" timeout -s TERM -k "$grace" "$limit" "${cmd[@]}" >"$log" 2>&1 </dev/null; } 2>>"$log"
  rc=$?
  set -e
  record "$stage" "$name" "$rc" $(($(now) - start)) "$kind" "$spec"
  say "$stage/$name: exit $rc after $(($(now) - start)) s"
}

# Runs "name<TAB>spec" jobs of a stage, $jobs at a time (1 for benchmarks), until its deadline.
run_pool() {
  local stage=$1 stage_deadline=$2 width=$3; shift 3
  local running=0 i=0 n=$# limit
  local -a queue=("$@")
  while [ $i -lt "$n" ]; do
    limit=$((stage_deadline - grace - $(now)))
    if [ $limit -lt 3 ]; then
      while [ $i -lt "$n" ]; do record "$stage" "${queue[$i]%%$'\t'*}" - 0 skip "no time left in the stage"; i=$((i + 1)); done
      break
    fi
    if [ $running -ge "$width" ]; then wait -n || true; running=$((running - 1)); continue; fi
    start_job "$stage" "${queue[$i]%%$'\t'*}" "$limit" "${queue[$i]#*$'\t'}" &
    running=$((running + 1)); i=$((i + 1))
  done
  wait || true
}

# The stage's jobs, one "name<TAB>spec" line each.
stage_jobs() {
  local stage=$1 a b p
  if [ -n "${KILN_RERUN:-}" ]; then
    # window_report.py rerun wrote one "stage<TAB>name<TAB>spec" row per job to repeat.
    local row
    for row in "${rerun_specs[@]}"; do
      [[ ${row%%$'\t'*} == "$stage" ]] && printf '%s\n' "${row#*$'\t'}"
    done
    return 0
  fi
  case $stage in
    smoke) for a in "${areas[@]}"; do printf '%s\t[%s][smoke]\n' "$a" "$a"; done ;;
    tests) for a in "${areas[@]}"; do printf '%s\t[%s]%s\n' "$a" "$a" "${KILN_TEST_SPEC:-}"; done ;;
    memcheck | racecheck) for a in "${areas[@]}"; do printf '%s\t[%s][smoke]~[api_error]\n' "$a" "$a"; done ;;
    trainer) printf 'gpt2-124m\t\n' ;;
    hfcheck) printf 'llama-qwen2\t\n' ;;
    bench) for b in "${benches[@]}"; do printf '%s\t\n' "$b"; done
      for p in "${peers[@]}"; do b=$(basename "$p" .py); printf 'peer-%s\t\n' "$b"; done ;;
  esac
}

preflight() {
  local f missing=0
  {
    echo "== bundle $bundle ($(du -sh "$bin" 2>/dev/null | cut -f1)), commit $commit"
    ls -l "$bin"
    echo "== ldd"
    for f in "$bin"/*; do
      if [ ! -f "$f" ] || [ ! -x "$f" ]; then continue; fi
      if timeout 5 ldd "$f" 2>/dev/null | grep -q 'not found'; then
        echo "$(basename "$f"): MISSING $(timeout 5 ldd "$f" | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
        missing=1
      fi
    done
    echo "== nvidia-smi"
    timeout 10 nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,memory.total,temperature.gpu,power.limit --format=csv 2>&1 || true
    echo "== kiln_info"
    [ -x "$bin/kiln_info" ] && timeout 10 "$bin/kiln_info" 2>&1 || echo "kiln_info: not in the bundle"
    echo "== compute-sanitizer"; [ -n "$sanitizer" ] && timeout 10 "$sanitizer" --version 2>&1 | tail -n 2 || echo "not found"
  } >"$work/logs/preflight.log" 2>&1
  record preflight ldd $missing $(($(now) - preflight_start)) preflight "$([ $missing = 0 ] && echo "every library found" || echo "missing libraries: see logs/preflight.log")"
  say "preflight: GPU present: $gpu_present, commit $commit, seed $seed"
}

# ---- the window -------------------------------------------------------------------------------
status=0
for stage in "${stages[@]}"; do
  stage_deadline=$(($(now) + $(cap "$stage")))
  [ $stage_deadline -le $((deadline - reserve)) ] || stage_deadline=$((deadline - reserve))
  mapfile -t todo < <([ "$stage" = preflight ] || stage_jobs "$stage")
  if [ $((stage_deadline - $(now))) -lt $((grace + 3)) ]; then
    for j in "${todo[@]}"; do record "$stage" "${j%%$'\t'*}" - 0 skip "the budget ran out before the stage"; done
    [ "$stage" != preflight ] || record preflight ldd - 0 skip "the budget ran out before the stage"
    say "$stage: not run (budget)"
    continue
  fi
  say "== $stage (${#todo[@]} jobs, until +$((stage_deadline - t0)) s)"
  case $stage in
    preflight) preflight ;;
    smoke | tests) run_pool "$stage" "$stage_deadline" "$jobs" "${todo[@]}" ;;
    memcheck | racecheck | trainer)
      if [ "$gpu_present" = 0 ]; then
        for j in "${todo[@]}"; do record "$stage" "${j%%$'\t'*}" - 0 skip "no-device: no GPU present"; done
      elif [ "$stage" != trainer ] && [ -z "$sanitizer" ]; then
        for j in "${todo[@]}"; do record "$stage" "${j%%$'\t'*}" - 0 skip "compute-sanitizer not found"; done
      else
        run_pool "$stage" "$stage_deadline" "$([ "$stage" = trainer ] && echo 1 || echo "$jobs")" "${todo[@]}"
      fi ;;
    hfcheck)
      # Optional: recorded as skipped ("optional: ...") where it cannot run.
      if [ ! -x "$bin/train_gpt" ] || [ ! -x "$bin/generate" ]; then
        for j in "${todo[@]}"; do record hfcheck "${j%%$'\t'*}" - 0 skip "optional: the bundle has no train_gpt / generate"; done
      elif ! timeout 60 python3 -c 'import transformers' 2>/dev/null; then
        for j in "${todo[@]}"; do record hfcheck "${j%%$'\t'*}" - 0 skip "optional: python3 cannot import transformers"; done
      else
        run_pool hfcheck "$stage_deadline" 1 "${todo[@]}"
      fi ;;
    bench)
      # One at a time: concurrent programs would time each other. Peers need a GPU and torch.
      mapfile -t own < <(printf '%s\n' "${todo[@]}" | grep -v '^peer-' || true)
      mapfile -t theirs < <(printf '%s\n' "${todo[@]}" | grep '^peer-' || true)
      [ ${#own[@]} -eq 0 ] || run_pool bench "$stage_deadline" 1 "${own[@]}"
      if [ "$gpu_present" = 0 ]; then
        for j in "${theirs[@]}"; do [ -n "$j" ] && record bench "${j%%$'\t'*}" - 0 skip "no-device: no GPU present"; done
      elif ! timeout 60 python3 -c 'import torch' 2>/dev/null; then
        for j in "${theirs[@]}"; do [ -n "$j" ] && record bench "${j%%$'\t'*}" - 0 skip "python3 cannot import torch"; done
      elif [ ${#theirs[@]} -gt 0 ]; then
        run_pool bench "$stage_deadline" 1 "${theirs[@]}"
      fi ;;
    *) say "unknown stage $stage"; exit 2 ;;
  esac
  pack
done
echo "finished=$(date -u +%FT%TZ)" >>"$work/env.txt"
echo "elapsed_s=$(($(now) - t0))" >>"$work/env.txt"
pack
python3 "$report" print "$out/summary.json" || status=1
rm -rf "$work" "$work.tgz" "$work.hf" "${unpacked:-/nonexistent}"
exit $status
