#!/usr/bin/env bash
# CPU tests of scripts/gpu-window.sh on fake bundles (tests/scripts/fakes: a kiln_gpu_tests that
# hangs, crashes, fails or exits 77 per area, benchmarks that pass or fail their check, a trainer,
# nvidia-smi and compute-sanitizer):
#   tests/scripts/gpu_window_test.sh SCENARIO     (faults | no_device | small_budget | rerun | record | dry_run)
# Each checks that the window ends within its budget, classifies every job, records what did not
# fit as not_run and leaves at most three files in OUT. Timing margins are generous: a loaded
# machine may be slow, never wrong.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scenario=${1:?scenario}
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT

fail() { echo "FAIL ($scenario): $*" >&2; [ -f "$tmp/out/summary.md" ] && cat "$tmp/out/summary.md" >&2; exit 1; }
# A bundle as scripts/gpu-bundle.sh lays it out, with the fakes as its programs.
mkdir -p "$tmp/bundle/bin" "$tmp/path"
cp "$here"/fakes/{kiln_gpu_tests,bench_good,bench_bad,train_gpt,kiln_info} "$tmp/bundle/bin/"
cp "$here"/fakes/{nvidia-smi,compute-sanitizer} "$tmp/path/"
echo fakecommit01 >"$tmp/bundle/bin/COMMIT"
printf 'gemm 900\nattention 800\nrope 100\nlayernorm 300\nsoftmax 200\n' >"$tmp/bundle/bin/AREAS"
tar czf "$tmp/bin.tgz" -C "$tmp/bundle" bin
real_gpu=0  # the machine's own nvidia-smi, before the fake one goes on PATH
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then real_gpu=1; fi
mkdir -p "$tmp/no-peers"
export PATH=$tmp/path:$PATH KILN_GRACE_S=1 KILN_RESERVE_S=2 KILN_PEERS_DIR=$tmp/no-peers
unset KILN_AREAS KILN_TEST_SPEC KILN_RERUN KILN_STAGES KILN_TEST_SEED FAKE_NO_GPU FAKE_BEHAVIOR

# Runs the window; checks its duration against the budget (plus the grace of one kill and a
# generous margin for a loaded machine) and the files it left.
window() {
  local budget=$1 start end; shift
  start=$(date +%s)
  set +e
  env "$@" "$root/scripts/gpu-window.sh" "$tmp/out" "$budget" >"$tmp/window.log" 2>&1
  rc=$?
  set -e
  end=$(date +%s)
  [ $((end - start)) -le $((budget + 30)) ] || fail "took $((end - start)) s for a budget of $budget s"
  local files
  files=$(find "$tmp/out" -mindepth 1 | sed "s|$tmp/out/||" | sort | tr '\n' ' ')
  [ "$files" = "results.tgz summary.json summary.md " ] || fail "OUT holds: $files"
  tar tzf "$tmp/out/results.tgz" >/dev/null || fail "results.tgz is not a gzipped tar"
}
# status STAGE NAME -> the job's status in summary.json (or "absent").
status() {
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
print(next((j["status"] for j in s["jobs"] if j["stage"]==sys.argv[2] and j["name"]==sys.argv[3]), "absent"))' \
    "$tmp/out/summary.json" "$1" "$2"
}
expect() { local got; got=$(status "$1" "$2"); [ "$got" = "$3" ] || fail "$1/$2 is $got, expected $3"; }
field() {  # field STAGE NAME KEY -> JSON of that key
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
print(json.dumps(next(j.get(sys.argv[4]) for j in s["jobs"] if j["stage"]==sys.argv[2] and j["name"]==sys.argv[3])))' \
    "$tmp/out/summary.json" "$1" "$2" "$3"
}

case $scenario in
  faults)
    # A GPU is "present": a hang times out (keeping the cases that ran), a crash and an exit 77
    # fail, a failed check fails its benchmark; the rest pass.
    window 120 KILN_BUNDLE="$tmp/bin.tgz" KILN_CAP_TESTS=12 KILN_TEST_SEED=1234 \
      FAKE_BEHAVIOR="gemm=hang attention=crash rope=exit77 layernorm=fail"
    [ "$rc" = 1 ] || fail "exit $rc, expected 1"
    expect preflight ldd pass
    expect smoke gemm pass
    expect tests gemm timeout
    [ "$(field tests gemm interrupted_in)" = '"gemm second, with [brackets]"' ] || fail "no interrupted case"
    [ "$(field tests gemm cases_passed)" = 1 ] || fail "the cases before the hang were lost"
    expect tests attention fail
    expect smoke rope fail
    expect tests rope fail
    field tests rope note | grep -q "GPU is present" || fail "77 with a GPU is not explained"
    expect tests layernorm fail
    [ "$(field tests layernorm failing_tests)" = '["layernorm second, with [brackets]"]' ] || fail "failing names"
    expect tests softmax pass
    expect trainer gpt2-124m pass
    expect memcheck softmax pass
    expect racecheck gemm pass
    expect bench bench_good pass
    expect bench bench_bad fail
    grep -q '"seed": "1234"' "$tmp/out/summary.json" || fail "seed not recorded"
    grep -q '"commit": "fakecommit01"' "$tmp/out/summary.json" || fail "commit not from COMMIT"
    # The non-passing rows come last in the output (only its end may come back).
    tail -n 25 "$tmp/window.log" | grep -q "| tests | gemm | TIMEOUT" || fail "timeout row not at the end"
    tail -n 25 "$tmp/window.log" | grep -q "| bench | bench_bad | FAIL" || fail "bench row not at the end"
    ;;
  no_device)
    # No GPU (nvidia-smi fails), every program says so: every GPU job is skipped, nothing fails.
    window 120 KILN_BUNDLE="$tmp/bundle/bin" FAKE_NO_GPU=1 FAKE_BEHAVIOR=all=nodevice
    [ "$rc" = 0 ] || fail "exit $rc, expected 0"
    python3 - "$tmp/out/summary.json" <<'PY' || fail "not every GPU job was skipped"
import json, sys
s = json.load(open(sys.argv[1]))
gpu_jobs = [j for j in s["jobs"] if j["stage"] != "preflight"]
assert gpu_jobs and all(j["status"] == "skipped" for j in gpu_jobs), [(j["stage"], j["name"], j["status"]) for j in gpu_jobs]
assert {j["stage"] for j in gpu_jobs} >= {"smoke", "tests", "trainer", "memcheck", "racecheck", "bench"}
PY
    # The same exit 77 without the program's word for it is a failure, even with no GPU.
    window 120 KILN_BUNDLE="$tmp/bundle/bin" FAKE_NO_GPU=1 FAKE_BEHAVIOR="all=nodevice gemm=exit77" KILN_STAGES=smoke
    expect smoke gemm fail
    expect smoke softmax skipped
    ;;
  small_budget)
    # 12 s cannot hold every stage: what did not fit is not_run, and the window still ends in time.
    window 12 KILN_BUNDLE="$tmp/bin.tgz" FAKE_BEHAVIOR="gemm=hang"
    python3 - "$tmp/out/summary.json" <<'PY' || fail "stages that did not fit are not recorded as not_run"
import json, sys
s = json.load(open(sys.argv[1]))
statuses = {j["status"] for j in s["jobs"]}
assert "not_run" in statuses, statuses
assert all(j["status"] in ("pass", "fail", "timeout", "not_run", "skipped") for j in s["jobs"])
assert any(j["stage"] == "bench" and j["status"] == "not_run" for j in s["jobs"]), "bench should not fit"
PY
    ;;
  rerun)
    # A window with failures, then a rerun of only what failed, by case, with sync-after-launch.
    window 120 KILN_BUNDLE="$tmp/bin.tgz" KILN_CAP_TESTS=12 FAKE_BEHAVIOR="gemm=hang layernorm=fail" \
      KILN_STAGES="tests bench"
    cp "$tmp/out/summary.json" "$tmp/first.json"
    window 120 KILN_BUNDLE="$tmp/bin.tgz" KILN_RERUN="$tmp/first.json"
    [ "$rc" = 1 ] || fail "the rerun exit $rc, expected 1 (bench_bad still fails)"
    expect tests gemm pass
    expect tests layernorm pass
    expect tests softmax absent
    expect trainer gpt2-124m absent
    expect memcheck gemm pass
    expect bench bench_bad fail
    expect bench bench_good absent
    field tests gemm spec | grep -q 'gemm second, with \[brackets\]' || fail "the rerun does not name the case"
    field memcheck layernorm spec | grep -q 'api_error' || fail "memcheck runs the deliberate API errors"
    tar xzf "$tmp/out/results.tgz" -C "$tmp" ./logs/tests.gemm.log
    grep -q "sync=1" "$tmp/logs/tests.gemm.log" || fail "KILN_SYNC_AFTER_LAUNCH not set in the rerun"
    ;;
  record)
    # scripts/record-results.sh on a window's OUT: the dated record, its JSON lines and a plot.
    window 120 KILN_BUNDLE="$tmp/bin.tgz" KILN_STAGES="preflight smoke bench" FAKE_BEHAVIOR="rope=fail"
    "$root/scripts/record-results.sh" "$tmp/out" "$tmp/results" >"$tmp/record.log" 2>&1 ||
      { cat "$tmp/record.log" >&2; fail "record-results.sh failed"; }
    md=$(cat "$tmp/record.log")
    [ -f "$md" ] || fail "no record: $md"
    case $(basename "$md") in 20[0-9][0-9]-[01][0-9]-[0-3][0-9]-nvidia-h100-80gb-hbm3.md) ;;
      *) fail "record name $(basename "$md")" ;; esac
    grep -q "commit fakecommit01" "$md" || fail "no commit in the record"
    grep -q "copy 3000 GB/s" "$md" || fail "no measured ceiling in the record"
    grep -q "| 1 | layernorm_fwd | N=8192 C=768 | 2500.0 | 1250.0 | 83% |" "$md" || fail "no figure beside its peer"
    grep -q "Target (bench/README.md)" "$md" || fail "no target"
    grep -q "| smoke | rope | fail |" "$md" || fail "no failing test row"
    [ "$(head -c 4 "${md%.md}-layernorm.png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "no PNG plot"
    [ "$(wc -l <"${md%.md}.jsonl")" -gt 3 ] || fail "short JSON lines"
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "${md%.md}.jsonl" || fail "bad JSON lines"
    ;;
  dry_run)
    # The real programs of this build (KILN_BUILD_DIR), laid out as gpu-bundle.sh lays them out,
    # on this machine without a GPU: three files, and every GPU job skipped for want of a device.
    build=${KILN_BUILD_DIR:?KILN_BUILD_DIR: the build folder}
    if [ "$real_gpu" = 1 ]; then
      echo "[kiln-skip] a GPU is present: the dry run is for machines without one"; exit 0
    fi
    rm -rf "$tmp/bundle/bin" && mkdir -p "$tmp/bundle/bin"
    for f in "$build"/tests/kiln_gpu_tests "$build"/bench/bench_* "$build"/python_free_demos/kiln_info \
             "$build"/python_free_demos/train_gpt "$build"/libkiln.so*; do
      [ -e "$f" ] && ln -s "$f" "$tmp/bundle/bin/$(basename "$f")"
    done
    [ -e "$tmp/bundle/bin/kiln_gpu_tests" ] || fail "no kiln_gpu_tests in $build"
    "$root"/scripts/gpu-areas.sh "$root/tests/gpu" >"$tmp/bundle/bin/AREAS"
    echo dryrun >"$tmp/bundle/bin/COMMIT"
    window 540 KILN_BUNDLE="$tmp/bundle/bin" FAKE_NO_GPU=1 KILN_PEERS_DIR="$root/bench/peers"
    [ "$rc" = 0 ] || fail "exit $rc"
    python3 - "$tmp/out/summary.json" "$root/tests/gpu" "$tmp/bundle/bin/AREAS" <<'PY' || fail "not every GPU job was skipped for want of a device"
import glob, json, os, sys
s = json.load(open(sys.argv[1]))
gpu_jobs = [j for j in s["jobs"] if j["stage"] != "preflight"]
bad = [(j["stage"], j["name"], j["status"], j.get("note")) for j in gpu_jobs if j["status"] != "skipped"]
assert not bad, bad
# Every test file's stem is an area or <area>_<subject> of one, and the window ran every area.
areas = {l.split()[0] for l in open(sys.argv[3]) if l.strip()}
stems = {os.path.basename(f).split("_test.")[0] for f in glob.glob(os.path.join(sys.argv[2], "*_test.*"))}
assert all(any(t == a or t.startswith(a + "_") for a in areas) for t in stems), (stems, areas)
assert {"gemm", "attention"} <= areas and not {"gemm_epilogue", "attention_bwd"} & areas, areas
# Every case of an area's files carries the area's tag, which is all the window selects by.
for f in glob.glob(os.path.join(sys.argv[2], "*_test.*")):
    stem = os.path.basename(f).split("_test.")[0]
    area = min((a for a in areas if stem == a or stem.startswith(a + "_")), key=len)
    src = open(f).read()
    for head in src.split("TEST_CASE(")[1:]:
        args = head.split(") {")[0]
        assert f'"[{area}]' in args or f'[{area}]' in args, (f, args[:80])
assert {j["name"] for j in gpu_jobs if j["stage"] == "tests"} == areas
assert any(j["stage"] == "bench" and j["name"].startswith("bench_") for j in gpu_jobs)
PY
    ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
echo "ok: $scenario"
