"""PyTorch peer of bench_rmsnorm, bf16, on the shapes of bench/rmsnorm.cpp.

  rmsnorm_fwd           F.rms_norm
  residual_rmsnorm_fwd  r = a + b; F.rms_norm(r): eager and torch.compile (which fuses the add)
  rmsnorm_bwd           autograd through F.rms_norm (dx, dgamma): what a PyTorch model runs

GB/s use the byte counts of bench/rmsnorm.cpp for the same op (so figures compare as times),
except the backward, which writes dx without reading it: 3 N C + 2 C bf16 + N fp32.
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_region


def row_shapes(quick):
    """bench/rows_bench.hpp's shapes: GPT-2 124M (8 * 1024 rows of 768), wider hidden sizes, and
    32 * 1024 rows at the smaller ones."""
    if quick:
        return [(8192, 768), (8192, 4096)]
    out = [(8192, c) for c in (768, 1024, 1600, 2048, 4096, 5120, 8192, 12288)]
    out += [(32768, c) for c in (768, 1024, 2048)]
    return out

EPS = 1e-6


def main():
    args = parse_args(__doc__)
    require_cuda()
    if not hasattr(F, "rms_norm"):
        print(f"rmsnorm: this PyTorch ({torch.__version__}) has no F.rms_norm; peer skipped")
        raise SystemExit(77)
    report = Report("rmsnorm", args)
    bf16 = torch.bfloat16
    for n, c in row_shapes(args.quick):
        x = torch.empty(n, c, device="cuda", dtype=bf16).uniform_(-2, 2)
        w = torch.empty(c, device="cuda", dtype=bf16).uniform_(0.5, 1.5)
        dy = torch.empty(n, c, device="cuda", dtype=bf16).uniform_(-1, 1)
        row, col, stat = n * c * 2, c * 2, n * 4
        shape = f"N={n} C={c}"

        def add(op, ms, nbytes):
            report.add({"op": op, "impl": "torch", "shape": shape, "N": n, "C": c, "dtype": "bf16",
                        "ms": ms, "bytes": nbytes, "gbps": nbytes / (ms * 1e-3) / 1e9})

        y = F.rms_norm(x, (c,), w, EPS)
        ref = F.rms_norm(x.float(), (c,), w.float(), EPS)
        err = (y.float() - ref).abs().max().item()
        if not err < 5e-2:
            print(f"rmsnorm: torch forward off by {err} for {shape}; not timed")
            continue
        add("rmsnorm_fwd", time_region(lambda: F.rms_norm(x, (c,), w, EPS), args),
            2 * row + col + stat)

        b = torch.empty(n, c, device="cuda", dtype=bf16).uniform_(-1, 1)

        def residual_rms(a_, b_, w_):
            r = a_ + b_
            return r, F.rms_norm(r, (c,), w_, EPS)

        for impl, fn in (("torch", residual_rms), ("torch-compile", torch.compile(residual_rms))):
            ms = time_region(lambda: fn(x, b, w), args)
            report.add({"op": "residual_rmsnorm_fwd", "impl": impl, "shape": shape, "N": n, "C": c,
                        "dtype": "bf16", "ms": ms, "bytes": 4 * row + col + stat,
                        "gbps": (4 * row + col + stat) / (ms * 1e-3) / 1e9})
        del b

        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = F.rms_norm(xg, (c,), wg, EPS)
        add("rmsnorm_bwd",
            time_region(lambda: torch.autograd.grad(out, (xg, wg), dy, retain_graph=True), args),
            3 * row + 2 * col + stat)
        del x, w, dy, y, ref, xg, wg, out
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
