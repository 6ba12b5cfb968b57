"""PyTorch peer of bench_layernorm, bf16, on the shapes of bench/layernorm.cpp.

  layernorm_fwd           F.layer_norm (saving mean and rstd, as aten.native_layer_norm does)
  residual_layernorm_fwd  a + b, then F.layer_norm: the unfused way (two kernels)
  layernorm_bwd           aten.native_layer_norm_backward (dx, dgamma, dbeta): impl "torch";
                          and followed by dresidual += dx, the work kiln's accumulating backward
                          does in one pass: impl "torch+add"

GB/s use the byte counts of bench/layernorm.cpp for the same op (so figures compare as times),
except "torch" backward, which writes dx without reading it: 3 N C + C bf16 + 2 N fp32 + 2 C bf16.
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

EPS = 1e-5


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("layernorm", args)
    bf16 = torch.bfloat16
    for n, c in row_shapes(args.quick):
        def rand(*shape, lo=-1.0, hi=1.0, dtype=bf16):
            return torch.empty(*shape, device="cuda", dtype=dtype).uniform_(lo, hi)

        x, b, dy, dres = rand(n, c, lo=-2, hi=3), rand(n, c), rand(n, c), rand(n, c)
        w, bias = rand(c, lo=0.5, hi=1.5), rand(c, lo=-0.5, hi=0.5)
        row, col, stats = n * c * 2, c * 2, 2 * n * 4
        shape = f"N={n} C={c}"

        def add(op, impl, ms, nbytes):
            report.add({"op": op, "impl": impl, "shape": shape, "N": n, "C": c, "dtype": "bf16",
                        "ms": ms, "bytes": nbytes, "gbps": nbytes / (ms * 1e-3) / 1e9})

        y, mean, rstd = torch.ops.aten.native_layer_norm(x, [c], w, bias, EPS)
        ref = F.layer_norm(x.float(), (c,), w.float(), bias.float(), EPS)
        err = (y.float() - ref).abs().max().item()
        if err < 5e-2:
            ms = time_region(lambda: torch.ops.aten.native_layer_norm(x, [c], w, bias, EPS), args)
            add("layernorm_fwd", "torch", ms, 2 * row + 2 * col + stats)
        else:
            print(f"layernorm: torch forward off by {err} for {shape}; not timed")

        def unfused():
            torch.ops.aten.native_layer_norm(x + b, [c], w, bias, EPS)

        add("residual_layernorm_fwd", "torch", time_region(unfused, args),
            4 * row + 2 * col + stats)

        def bwd():
            return torch.ops.aten.native_layer_norm_backward(dy, x, [c], mean, rstd, w, bias,
                                                             [True, True, True])

        dx, _, _ = bwd()
        xg = x.float().requires_grad_()
        wg, bg = w.float().requires_grad_(), bias.float().requires_grad_()
        ref_dx, = torch.autograd.grad(F.layer_norm(xg, (c,), wg, bg, EPS), (xg,), dy.float())
        err = (dx.float() - ref_dx).abs().max().item()
        if err < 5e-2:
            add("layernorm_bwd", "torch", time_region(bwd, args), 3 * row + 3 * col + stats)

            def bwd_accumulate():
                dres.add_(bwd()[0])

            add("layernorm_bwd", "torch+add", time_region(bwd_accumulate, args),
                4 * row + col + stats + 4 * c * 4)
        else:
            print(f"layernorm: torch backward off by {err} for {shape}; not timed")
        del x, b, dy, dres, y, mean, rstd, dx, xg
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
