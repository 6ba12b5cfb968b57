#!/usr/bin/env python3
"""Turns benchmark JSON lines (bench/harness, bench/peers) into a report: every kiln figure beside its peers from
the same run, the measured ceilings, and the target (bench/README.md); one plot (PNG) per benchmark.

    scripts/bench_report.py OUTDIR     (reads OUTDIR/bench.jsonl and OUTDIR/peers.jsonl,
                                        writes OUTDIR/report.md and OUTDIR/<bench>.png)
Records carry: bench, op, impl, shape, ms, and gbps or tflops (bench/harness, bench/peers).
"""
import collections
import json
import os
import sys

# The targets of bench/README.md, by benchmark.
TARGETS = {
    "layernorm": "fwd >= 90% of copy bandwidth at C >= 4096; >= 1.6 TB/s at C = 768; bwd >= 80%",
    "rmsnorm": "as LayerNorm",
    "softmax": "fwd/bwd >= 90% of copy bandwidth",
    "gelu": ">= 90% of copy bandwidth",
    "rope": ">= 90% of copy bandwidth (peers: PyTorch eager and torch.compile)",
    "swiglu": ">= 90% of copy bandwidth (peers: PyTorch eager and torch.compile)",
    "classifier": ">= 85% of copy bandwidth, no probability tensor in memory",
    "embedding": "at the copy bandwidth (no target in bench/README.md)",
    "optimizer": "AdamW >= 85% of copy bandwidth (peer: torch AdamW fused=True)",
    "gemm": "sm_90a kernel >= 1.0x cuBLAS at 4096^3 and 8192^3; fused epilogues >= 1.0x cuBLASLt, >= 1.1x unfused",
    "attention": "fwd HD=128 non-causal T>=4k >= 650 TFLOP/s; causal >= 600; HD=64 >= 500; bwd HD=128 >= 560; sm_80 path >= 1.0x FA2",
    "end_to_end": "GPT-2 124M T=1024: MFU >= 60%, >= 1.3x PyTorch (torch.compile + flash SDPA)",
    "allreduce": "bus bandwidth near NCCL's own tests",
}


def load(path):
    records = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return records


def figure(r):
    if "tflops" in r:
        return r["tflops"], "TFLOP/s"
    if "gbps" in r:
        return r["gbps"], "GB/s"
    if "tokens_per_s" in r:
        return r["tokens_per_s"], "tokens/s"
    return None, ""


def tables(records):
    """Per benchmark, in the order they first appear: (impls, rows, unit), where rows maps each
    (op, shape) to {impl: (figure, record)}: every kiln figure beside its peers of the same run."""
    by_bench = collections.OrderedDict()
    for r in records:
        by_bench.setdefault(r.get("bench", "?"), []).append(r)
    out = collections.OrderedDict()
    for bench, rs in by_bench.items():
        impls = list(dict.fromkeys(r.get("impl", "?") for r in rs))
        rows = collections.OrderedDict()
        unit = ""
        for r in rs:
            v, u = figure(r)
            if v is None:
                continue
            unit = u
            rows.setdefault((r.get("op", ""), r.get("shape", "")), {})[r.get("impl", "?")] = (v, r)
        out[bench] = (impls, rows, unit)
    return out


def pct_of_ceiling(cells):
    """kiln's percentage of the measured ceiling in one row of a table ("" when not recorded)."""
    pct = ""
    for i, (_, r) in cells.items():
        p = r.get("pct_of_copy", r.get("pct_of_gemm_peak"))
        if i.startswith("kiln") and p is not None:
            pct = f"{p:.0f}%"
    return pct


def main():
    out = sys.argv[1]
    ours, peers = load(os.path.join(out, "bench.jsonl")), load(os.path.join(out, "peers.jsonl"))
    records = ours + peers
    lines = ["# kiln benchmark report", ""]
    env = next((r for r in ours if "device" in r), {})
    penv = next((r for r in peers if "device" in r), {})
    lines += [f"- device: {env.get('device', penv.get('device', '?'))} "
              f"(cc {env.get('compute_capability', '?')}, {env.get('sms', '?')} SMs, "
              f"SM clock {env.get('sm_clock_mhz', '?')} MHz, memory clock {env.get('memory_clock_mhz', '?')} MHz)",
              f"- commit {env.get('commit', penv.get('commit', '?'))}, date {env.get('date', penv.get('date', '?'))}",
              f"- CUDA runtime {env.get('cuda_runtime', '?')}, driver {env.get('cuda_driver', '?')}, "
              f"cuBLASLt {env.get('cublaslt', '?')}, cuDNN {env.get('cudnn', '?')}, NCCL {env.get('nccl', '?')}, "
              f"PyTorch {penv.get('torch', '?')} (CUDA {penv.get('torch_cuda', '?')}, cuDNN {penv.get('torch_cudnn', '?')})"]
    ceil = next((r for r in ours if r.get("ceiling_copy_gbps")), {})
    lines += [f"- measured ceilings: copy {ceil.get('ceiling_copy_gbps', 0):.0f} GB/s (read + write), "
              f"cuBLAS bf16 8192^3 {ceil.get('ceiling_gemm_tflops', 0):.0f} TFLOP/s", ""]

    for bench, (impls, rows, unit) in tables(records).items():
        lines += [f"## {bench}", "", f"Target (bench/README.md): {TARGETS.get(bench, 'none stated')}", ""]
        lines.append("| op | shape | " + " | ".join(f"{i} ({unit})" for i in impls) + " | kiln % of ceiling |")
        lines.append("|---|---|" + "---|" * len(impls) + "---|")
        for (op, shape), cells in rows.items():
            vals = [f"{cells[i][0]:.1f}" if i in cells else "" for i in impls]
            lines.append(f"| {op} | {shape} | " + " | ".join(vals) + f" | {pct_of_ceiling(cells)} |")
        lines.append("")
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            ops = list(dict.fromkeys(op for op, _ in rows))
            fig, axes = plt.subplots(len(ops), 1, figsize=(10, 3.2 * len(ops)), squeeze=False)
            for ax, op in zip(axes[:, 0], ops):
                shapes = [s for (o, s) in rows if o == op]
                for i in impls:
                    ys = [rows[(op, s)].get(i, (float("nan"),))[0] for s in shapes]
                    ax.plot(range(len(shapes)), ys, marker="o", label=i)
                ax.set_xticks(range(len(shapes)))
                ax.set_xticklabels(shapes, rotation=30, ha="right", fontsize=7)
                ax.set_ylabel(unit)
                ax.set_title(f"{bench}: {op}")
                ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(os.path.join(out, f"{bench}.png"), dpi=110)
            plt.close(fig)
            lines += [f"![{bench}]({bench}.png)", ""]
        except Exception as e:  # plotting is a nicety; the table is the record
            lines += [f"(no plot: {e})", ""]

    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
