#!/usr/bin/env python3
"""Records a GPU window's results under bench/results/ (scripts/record-results.sh runs it here,
after the window): <date>-<gpu>.md, <date>-<gpu>.jsonl and one <date>-<gpu>-<bench>.png per
benchmark. bench/results/README.md says what a record holds.

    record_results.py OUT_FROM_WINDOW [RESULTS_DIR]    (default bench/results)
"""
import collections
import json
import os
import re
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import TARGETS, pct_of_ceiling, tables  # noqa: E402  (the targets, one place)
import png_plot  # noqa: E402


def load_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    window, results = argv[1], argv[2] if len(argv) > 2 else "bench/results"
    with open(os.path.join(window, "summary.json")) as f:
        summary = json.load(f)
    work = tempfile.mkdtemp()
    tgz = os.path.join(window, "results.tgz")
    if os.path.exists(tgz):
        with tarfile.open(tgz) as t:
            t.extractall(work, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(work)
    ours = load_jsonl(os.path.join(work, "bench", "bench.jsonl"))
    peers = load_jsonl(os.path.join(work, "bench", "peers.jsonl"))

    gpu = summary.get("environment", {}).get("gpu", {})
    device = gpu.get("name") or next((r.get("device") for r in ours if r.get("device")), None)
    device = device or ("no GPU" if not summary.get("gpu_present") else "unknown GPU")
    date = (summary.get("started") or "0000-00-00")[:10]
    os.makedirs(results, exist_ok=True)
    stem = f"{date}-{slug(device)}"
    n = 2
    while os.path.exists(os.path.join(results, stem + ".md")):
        stem = f"{date}-{slug(device)}-{n}"
        n += 1

    env = next((r for r in ours if "device" in r), {})
    penv = next((r for r in peers if "device" in r), {})
    ceil = next((r for r in ours if r.get("ceiling_copy_gbps")), {})
    lines = [f"# GPU window {date} on {device}", "",
             f"- commit {summary.get('commit')}, seed {summary.get('seed')} (KILN_TEST_SEED), "
             f"window {summary.get('elapsed_s')} s of {summary.get('budget_s')} s",
             f"- device {device}, driver {gpu.get('driver_version', env.get('cuda_driver', '?'))}, "
             f"SM clock {gpu.get('clocks.current.sm [MHz]', '?')} (max {gpu.get('clocks.max.sm [MHz]', '?')}), "
             f"memory {gpu.get('memory.total [MiB]', '?')}",
             f"- CUDA runtime {env.get('cuda_runtime', '?')}, cuBLASLt {env.get('cublaslt', '?')}, "
             f"cuDNN {env.get('cudnn', '?')}, NCCL {env.get('nccl', '?')}; "
             f"PyTorch {penv.get('torch', '?')}",
             f"- measured ceilings: copy {ceil.get('ceiling_copy_gbps', 0):.0f} GB/s (read + write), "
             f"cuBLAS bf16 8192^3 {ceil.get('ceiling_gemm_tflops', 0):.0f} TFLOP/s"
             + ("" if ceil else " (not measured in this window)"), ""]
    info = summary.get("environment", {}).get("kiln_info")
    if info:
        lines += ["<details><summary>kiln_info</summary>", "", "```"] + info + ["```", "</details>", ""]

    # Tests and sanitizers: counts per stage, then every row that did not pass.
    by_stage = collections.OrderedDict()
    for j in summary.get("jobs", []):
        by_stage.setdefault(j["stage"], collections.Counter())[j["status"]] += 1
    lines += ["## Tests, trainer and sanitizers", "", "| stage | pass | fail | timeout | not run | skipped |",
              "|---|---|---|---|---|---|"]
    for stage, c in by_stage.items():
        lines.append(f"| {stage} | {c['pass']} | {c['fail']} | {c['timeout']} | {c['not_run']} | {c['skipped']} |")
    lines.append("")
    t = summary.get("trainer") or {}
    if t:
        lines += [f"Trainer (GPT-2 124M, cuda backend): loss {t.get('first_loss')} -> {t.get('last_loss')} "
                  f"(ln V = {t.get('ln_vocab')}), {t.get('tokens_per_s')} tokens/s, MFU {t.get('mfu')}"
                  + (f"; problems: {'; '.join(t['problems'])}" if t.get("problems") else ""), ""]
    bad = [j for j in summary.get("jobs", []) if j["status"] not in ("pass", "skipped")]
    if bad:
        lines += ["Not passing:", "", "| stage | job | status | notes |", "|---|---|---|---|"]
        for j in bad:
            names = "; ".join(j.get("failing_tests", [])[:10])
            lines.append(f"| {j['stage']} | {j['name']} | {j['status']} | {j.get('note', '')}"
                         + (f" failing: {names}" if names else "") + " |")
        lines.append("")

    # Every figure beside its peers and its target.
    by_bench = tables(ours + peers)
    if not by_bench:
        lines += ["No benchmark figure was measured in this window.", ""]
    for bench, (impls, rows, unit) in by_bench.items():
        lines += [f"## {bench}", "", f"Target (bench/README.md): {TARGETS.get(bench, 'none stated')}", "",
                  "| # | op | shape | " + " | ".join(f"{i} ({unit})" for i in impls) + " | kiln % of ceiling |",
                  "|---|---|---|" + "---|" * len(impls) + "---|"]
        for k, ((op, shape), cells) in enumerate(rows.items(), 1):
            vals = [f"{cells[i][0]:.1f}" if i in cells else "" for i in impls]
            lines.append(f"| {k} | {op} | {shape} | " + " | ".join(vals) + f" | {pct_of_ceiling(cells)} |")
        png = f"{stem}-{slug(bench)}.png"
        groups = [str(k) for k in range(1, len(rows) + 1)]
        values = [[cells[i][0] if i in cells else None for i in impls] for cells in rows.values()]
        ceiling = ceil.get("ceiling_copy_gbps") if unit == "GB/s" else (
            ceil.get("ceiling_gemm_tflops") if unit == "TFLOP/s" else None)
        if rows:
            png_plot.bar_chart(os.path.join(results, png), bench, unit, groups, impls, values, ceiling)
            lines += ["", f"![{bench}]({png})"]
        lines.append("")

    with open(os.path.join(results, stem + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(results, stem + ".jsonl"), "w") as f:
        head = {k: summary.get(k) for k in ("commit", "seed", "started", "elapsed_s", "budget_s",
                                             "gpu_present", "counts", "trainer")}
        head.update(kind="window", device=device, environment=summary.get("environment"))
        f.write(json.dumps(head) + "\n")
        for j in summary.get("jobs", []):
            f.write(json.dumps(dict(j, kind="job")) + "\n")
        for r in ours + peers:
            f.write(json.dumps(dict(r, kind="figure")) + "\n")
    print(os.path.join(results, stem + ".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
