"""PyTorch peer of bench_gelu, bf16, on the shapes of bench/gelu.cpp (MLP activations, B * T rows
of 4 C): F.gelu(approximate="tanh") forward and aten.gelu_backward. GB/s with the byte counts of
bench/gelu.cpp (fwd 2 n, bwd 3 n).
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_region


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("gelu", args)
    shapes = [(8192, 3072)] if args.quick else [(8192, 3072), (32768, 3072), (8192, 6400),
                                                (8192, 16384)]
    for rows, cols in shapes:
        n = rows * cols
        x = torch.empty(n, device="cuda", dtype=torch.bfloat16).uniform_(-4, 4)
        dy = torch.empty(n, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1)
        shape = f"N={rows} C={cols} (n={n})"

        def add(op, ms, nbytes):
            report.add({"op": op, "impl": "torch", "shape": shape, "n": n, "dtype": "bf16",
                        "ms": ms, "bytes": nbytes, "gbps": nbytes / (ms * 1e-3) / 1e9})

        err = (F.gelu(x, approximate="tanh").float()
               - F.gelu(x.float(), approximate="tanh")).abs().max().item()
        if not err < 5e-2:
            print(f"gelu: torch off by {err} for {shape}; not timed")
            continue
        add("gelu_fwd", time_region(lambda: F.gelu(x, approximate="tanh"), args), 2 * n * 2)
        add("gelu_bwd",
            time_region(lambda: torch.ops.aten.gelu_backward(dy, x, approximate="tanh"), args),
            3 * n * 2)
        del x, dy
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
