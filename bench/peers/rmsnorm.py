"""PyTorch peer of bench_rmsnorm, bf16, on the shapes of bench/rmsnorm.cpp.

  rmsnorm_fwd           F.rms_norm
  residual_rmsnorm_fwd  r = a + b; F.rms_norm(r): eager and torch.compile (which fuses the add)
  rmsnorm_bwd           autograd through F.rms_norm (dx, dgamma): what a PyTorch model runs

GB/s use the byte counts of bench/rmsnorm.cpp for the same op (so figures compare as times),
except the backward, which writes dx without reading it: 3 N C + 2 C bf16 + N fp32.
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, row_shapes, time_region, uniform


EPS = 1e-6


def main():
    args = parse_args(__doc__)
    require_cuda()
    if not hasattr(F, "rms_norm"):
        print(f"rmsnorm: this PyTorch ({torch.__version__}) has no F.rms_norm; peer skipped")
        raise SystemExit(77)
    report = Report("rmsnorm", args)
    for n, c in row_shapes(args.quick):
        x = uniform(n, c, lo=-2, hi=2)
        w = uniform(c, lo=0.5, hi=1.5)
        dy = uniform(n, c)
        row, col, stat = n * c * 2, c * 2, n * 4
        shape = f"N={n} C={c}"

        def add(op, ms, nbytes, impl="torch"):
            report.add_bandwidth(op, impl, shape, ms, nbytes, N=n, C=c, dtype="bf16")

        y = F.rms_norm(x, (c,), w, EPS)
        ref = F.rms_norm(x.float(), (c,), w.float(), EPS)
        err = (y.float() - ref).abs().max().item()
        if not err < 5e-2:
            print(f"rmsnorm: torch forward off by {err} for {shape}; not timed")
            continue
        add("rmsnorm_fwd", time_region(lambda: F.rms_norm(x, (c,), w, EPS), args),
            2 * row + col + stat)

        b = uniform(n, c)

        def residual_rms(a_, b_, w_):
            r = a_ + b_
            return r, F.rms_norm(r, (c,), w_, EPS)

        for impl, fn in (("torch", residual_rms), ("torch-compile", torch.compile(residual_rms))):
            ms = time_region(lambda: fn(x, b, w), args)
            add("residual_rmsnorm_fwd", ms, 4 * row + col + stat, impl)
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
