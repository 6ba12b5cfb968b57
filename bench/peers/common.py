"""Shared timing for the PyTorch peers, measured the way kiln's C++ harness measures.

CUDA events around the region, warm-up first, the median of many repetitions, the L2 flushed
(a buffer twice the L2 written) before each repetition, never zeros as inputs. Each figure is
one JSON line in the same schema as bench/harness (impl = "torch" or "torch-<backend>").
"""
import argparse
import datetime
import json
import math
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


def row_shapes(quick):
    """bench/rows_bench.hpp's shapes: GPT-2 124M (8 * 1024 rows of 768), wider hidden sizes, and
    32 * 1024 rows at the smaller ones."""
    if quick:
        return [(8192, 768), (8192, 4096)]
    out = [(8192, c) for c in (768, 1024, 1600, 2048, 4096, 5120, 8192, 12288)]
    out += [(32768, c) for c in (768, 1024, 2048)]
    return out


def uniform(*shape, lo=-1.0, hi=1.0, dtype=torch.bfloat16):
    """A tensor on the device, uniform in [lo, hi): never zeros."""
    return torch.empty(*shape, device="cuda", dtype=dtype).uniform_(lo, hi)


def time_train_step(model, compiled, vocab, b, t, args, label, loss_tolerance):
    """Median milliseconds of one training step as kiln's trainer runs it: bf16 autocast forward
    and backward of `compiled` (torch.compile of `model`), gradients clipped at 1.0, fused AdamW
    (decay 0.1 on matrices only), on random tokens of a (b, t) batch. The step is checked before
    it is timed (which also lets torch.compile finish): the first loss within `loss_tolerance` of
    ln(vocab), then falling over five steps. None when it does not train or does not fit."""
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    gen = torch.Generator(device="cuda").manual_seed(7)
    idx = torch.randint(0, vocab, (b, t), device="cuda", generator=gen)
    tgt = torch.randint(0, vocab, (b, t), device="cuda", generator=gen)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    try:
        first = step().item()
        last = first
        for _ in range(5):
            last = step().item()
        if not (abs(first - math.log(vocab)) < loss_tolerance and last < first):
            print(f"{label} does not train ({first:.4f} -> {last:.4f}); not timed")
            return None
        return time_region(step, args, flush_l2=False)
    except torch.cuda.OutOfMemoryError:
        print(f"{label} does not fit; skipped")
        return None
    finally:
        del opt
        torch.cuda.empty_cache()


def train_step_record(op, shape, b, t, params, layers, width, ms):
    """The figures of one timed training step: tokens/s, and MFU by kiln's convention (model
    FLOPs per token 6 * params + 6 * layers * width * t, over the datasheet dense bf16 peak of an
    H100 / H200, 989 TFLOP/s; bench/README.md)."""
    tokens = b * t
    flops = (6.0 * params + 6.0 * layers * width * t) * tokens
    return {"op": op, "impl": "torch-compile", "shape": shape, "B": b, "T": t, "params": params,
            "ms": ms, "tokens_per_s": tokens / (ms * 1e-3), "mfu": flops / (ms * 1e-3) / 989e12,
            "tflops": flops / (ms * 1e-3) / 1e12}


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

    def add_bandwidth(self, op, impl, shape, ms, nbytes, **fields):
        """A memory-bound figure: `nbytes` (each input read once, each output written once) over
        `ms`, in GB/s; `fields` adds the shape's sizes (N, C, dtype, ...)."""
        self.add({"op": op, "impl": impl, "shape": shape, **fields, "ms": ms, "bytes": nbytes,
                  "gbps": nbytes / (ms * 1e-3) / 1e9})


def require_cuda():
    if not torch.cuda.is_available():
        print("[kiln-no-device] no CUDA device: peer benchmark skipped")
        raise SystemExit(77)
