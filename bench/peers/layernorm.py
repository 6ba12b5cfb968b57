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

from common import Report, parse_args, require_cuda, row_shapes, time_region, uniform


EPS = 1e-5


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("layernorm", args)
    for n, c in row_shapes(args.quick):
        x, b, dy, dres = uniform(n, c, lo=-2, hi=3), uniform(n, c), uniform(n, c), uniform(n, c)
        w, bias = uniform(c, lo=0.5, hi=1.5), uniform(c, lo=-0.5, hi=0.5)
        row, col, stats = n * c * 2, c * 2, 2 * n * 4
        shape = f"N={n} C={c}"

        def add(op, impl, ms, nbytes):
            report.add_bandwidth(op, impl, shape, ms, nbytes, N=n, C=c, dtype="bf16")

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
