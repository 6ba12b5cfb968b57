"""PyTorch peer of bench_swiglu, bf16, on the shapes of bench/swiglu.cpp: F.silu(gate) * up with
gate and up the two halves of one (N, 2I) GEMM output, eager and torch.compile; backward is
autograd's d(gu). GB/s with the byte counts of bench/swiglu.cpp (fwd 3 N I, bwd 5 N I, bf16), so
figures compare as times.
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_region


def swiglu(gu):
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("swiglu", args)
    compiled = torch.compile(swiglu)
    shapes = [(8192, 8192)] if args.quick else [(8192, 1536), (8192, 2560), (8192, 8192),
                                                (8192, 14336)]
    for n, i in shapes:
        gu = torch.empty(n, 2 * i, device="cuda", dtype=torch.bfloat16).uniform_(-6, 6)
        dout = torch.empty(n, i, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1)
        shape = f"N={n} I={i}"
        elems = n * i

        def add(op, impl, ms, nbytes):
            report.add({"op": op, "impl": impl, "shape": shape, "N": n, "I": i, "dtype": "bf16",
                        "ms": ms, "bytes": nbytes, "gbps": nbytes / (ms * 1e-3) / 1e9})

        ref = swiglu(gu.float())
        err = (swiglu(gu).float() - ref).abs().max().item()
        if not err < 2e-2 * max(1.0, ref.abs().max().item()):
            print(f"swiglu: torch off by {err} for {shape}; not timed")
            continue
        for impl, fn in (("torch", swiglu), ("torch-compile", compiled)):
            add("swiglu_fwd", impl, time_region(lambda: fn(gu), args), 3 * elems * 2)
            gug = gu.detach().clone().requires_grad_()
            out = fn(gug)
            add("swiglu_bwd", impl,
                time_region(lambda: torch.autograd.grad(out, gug, dout, retain_graph=True), args),
                5 * elems * 2)
            del gug, out
        del gu, dout, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
