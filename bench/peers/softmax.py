"""PyTorch peer of bench_softmax, bf16, on the cases of bench/softmax.cpp (attention-score rows,
B * NH * T rows of T, causal and not; model-width rows).

  softmax_fwd  torch.softmax(x, -1) ("torch"; no scale, so one kernel: generous to PyTorch), and
               for causal cases x.masked_fill(mask, -inf) then softmax ("torch-masked")
  softmax_bwd  aten._softmax_backward_data

GB/s use the byte counts of bench/softmax.cpp (fwd 2 N C, bwd 3 N C), so figures compare as times.
"""
import torch

from common import Report, parse_args, require_cuda, row_shapes, time_region


def cases(quick):
    out = []
    for t in ([1024] if quick else [512, 1024, 2048, 4096]):
        bnh = min(96, (1 << 27) // (t * t))
        for causal in (False, True):
            out.append((bnh * t, t, causal))
    if not quick:
        out += [(n, c, False) for n, c in row_shapes(False) if n == 8192]
    return out


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("softmax", args)
    bf16 = torch.bfloat16
    for n, c, causal in cases(args.quick):
        x = torch.empty(n, c, device="cuda", dtype=bf16).uniform_(-8, 8)
        dy = torch.empty(n, c, device="cuda", dtype=bf16).uniform_(-1, 1)
        shape = f"N={n} C={c}" + (" causal" if causal else "")
        row = n * c * 2

        def add(op, impl, ms, nbytes):
            report.add_bandwidth(op, impl, shape, ms, nbytes, N=n, C=c, causal=causal, dtype="bf16")

        if causal:
            mask = torch.ones(c, c, device="cuda", dtype=torch.bool).triu_(1)
            blocks = x.view(n // c, c, c)

            def fwd():
                return torch.softmax(blocks.masked_fill(mask, float("-inf")), -1)

            y = fwd().view(n, c)
            ref = torch.softmax(blocks.float().masked_fill(mask, float("-inf")), -1).view(n, c)
            impl = "torch-masked"
        else:
            def fwd():
                return torch.softmax(x, -1)

            y = fwd()
            ref = torch.softmax(x.float(), -1)
            impl = "torch"
        err = (y.float() - ref).abs().max().item()
        if not err < 2e-2:
            print(f"softmax: torch off by {err} for {shape}; not timed")
            continue
        add("softmax_fwd", impl, time_region(fwd, args), 2 * row)
        if not causal:
            add("softmax_bwd", "torch",
                time_region(lambda: torch.ops.aten._softmax_backward_data(dy, y, -1, bf16), args),
                3 * row)
        del x, dy, y, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
