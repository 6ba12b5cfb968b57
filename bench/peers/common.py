"""Shared timing for the PyTorch peers, measured the way kiln's C++ harness measures.

CUDA events around the region, warm-up first, the median of many repetitions, the L2 flushed
(a buffer twice the L2 written) before each repetition, never zeros as inputs. Each figure is
one JSON line in the same schema as bench/harness (impl = "torch" or "torch-<backend>").
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess

import torch


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", default="", help="append one JSON line per figure to this file")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="a few shapes only")
    return p.parse_args()


_flush_buffer = None


def time_region(fn, args, flush_l2=True):
    """Median milliseconds of fn() over args.reps repetitions after args.warmup untimed calls."""
    global _flush_buffer
    if flush_l2 and _flush_buffer is None:
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        _flush_buffer = torch.empty(max(2 * l2, 64 << 20), dtype=torch.uint8, device="cuda")
    for _ in range(args.warmup):
        fn()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(args.reps):
        if flush_l2:
            _flush_buffer.fill_(i & 0xFF)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def environment():
    commit = os.environ.get("KILN_GIT_COMMIT")
    if not commit:
        try:
            commit = subprocess.check_output(["git", "rev-parse", "--short=12", "HEAD"],
                                             text=True, stderr=subprocess.DEVNULL).strip()
        except Exception:
            commit = "unknown"
    props = torch.cuda.get_device_properties(0)
    return {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_cudnn": torch.backends.cudnn.version(),
    }


class Report:
    def __init__(self, bench, args):
        self.bench, self.args, self.env = bench, args, environment()
        print(f"{'bench':14} {'op':22} {'impl':16} {'shape':34} {'ms':>10} {'figure':>10}")

    def add(self, record):
        record = dict(record, bench=self.bench)
        fig = record.get("tflops", record.get("gbps", 0.0))
        unit = "TF" if "tflops" in record else "GB"
        print(f"{self.bench:14} {record.get('op', ''):22} {record.get('impl', ''):16} "
              f"{record.get('shape', ''):34} {record.get('ms', 0.0):10.4f} {fig:7.1f} {unit}",
              flush=True)
        if self.args.json:
            with open(self.args.json, "a") as f:
                f.write(json.dumps({**self.env, **record}) + "\n")


def require_cuda():
    if not torch.cuda.is_available():
        print("[kiln-no-device] no CUDA device: peer benchmark skipped")
        raise SystemExit(77)
