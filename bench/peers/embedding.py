"""PyTorch peer of bench_embedding: wte(tokens) + wpe(positions) forward, and its backward into
the two weight gradients, on the shapes, id distribution and byte counts of bench/embedding.cpp.

"torch" keeps bf16 weights (bf16 gradients); "torch-fp32" keeps fp32 weights and casts the sum to
bf16 (fp32 gradients, as kiln keeps them: the form comparable to kiln's backward).
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_region

CASES = [(8, 1024, 768, 50257), (32, 1024, 768, 50257), (16, 1024, 1600, 50257)]


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("embedding", args)
    cases = CASES[:1] if args.quick else CASES
    gen = torch.Generator(device="cuda").manual_seed(5)
    for b, t, c, v in cases:
        shape = f"B={b} T={t} C={c} V={v}"
        m = b * t
        # Zipf-like ids as bench_embedding draws them: floor(V^u) - 1.
        u = torch.rand(m, device="cuda", generator=gen, dtype=torch.float64)
        tokens = (torch.pow(float(v), u).floor().long() - 1).clamp_(0, v - 1).view(b, t)
        distinct = int(torch.unique(tokens).numel())
        pos = torch.arange(t, device="cuda")
        fwd_bytes = 4.0 * m + 2.0 * m * c + 2.0 * t * c + 2.0 * m * c
        bwd_bytes = 4.0 * m + 2.0 * m * c + 8.0 * distinct * c + 8.0 * t * c
        for impl, wdtype in (("torch", torch.bfloat16), ("torch-fp32", torch.float32)):
            wte = torch.empty(v, c, device="cuda", dtype=wdtype).uniform_(-1, 1).requires_grad_()
            wpe = torch.empty(t, c, device="cuda", dtype=wdtype).uniform_(-1, 1).requires_grad_()
            dout = torch.empty(b, t, c, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1)

            def forward():
                return (F.embedding(tokens, wte) + F.embedding(pos, wpe)).to(torch.bfloat16)

            with torch.no_grad():
                out = forward()
                want = wte[tokens[0, 5]].float() + wpe[5].float()
                err = (out[0, 5].float() - want).abs().max().item()
            if not err < 2e-2:
                print(f"embedding: {impl} off by {err} for {shape}; not timed")
                continue

            def fwd():
                with torch.no_grad():
                    forward()

            ms = time_region(fwd, args)
            report.add({"op": "embedding_fwd", "impl": impl, "shape": shape, "bytes": fwd_bytes,
                        "ms": ms, "gbps": fwd_bytes / (ms * 1e-3) / 1e9})

            out = forward()

            def bwd():
                wte.grad = None
                wpe.grad = None
                torch.autograd.backward(out, dout, retain_graph=True)

            ms = time_region(bwd, args)
            report.add({"op": "embedding_bwd", "impl": impl, "shape": shape,
                        "distinct_ids": distinct, "bytes": bwd_bytes, "ms": ms,
                        "gbps": bwd_bytes / (ms * 1e-3) / 1e9})


if __name__ == "__main__":
    main()
