"""PyTorch peer of bench_classifier: F.cross_entropy forward + backward on bf16 logits, the shapes
and byte count of bench/classifier.cpp (each logit read once and each gradient written once,
2 + 2 bytes an element, plus 8 bytes a row), so the GB/s compare time for time.

Two forms: "torch" (bf16 logits straight into F.cross_entropy) and "torch-fp32" (upcast to fp32
first, which is what autocast does to cross_entropy in a nanoGPT-style model). Padded vocabularies
are passed as the (N, V) view of an (N, Vp) tensor, as kiln reads them.
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_region

CASES = [(8192, 50257, 50304), (8192, 50304, 50304), (8192, 50257, 50257), (16384, 32000, 32000),
         (8192, 128256, 128256)]


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("classifier", args)
    cases = CASES[:1] if args.quick else CASES
    for n, v, vp in cases:
        shape = f"N={n} V={v} Vp={vp}"
        nbytes = 2.0 * n * v + 2.0 * n * vp + 8.0 * n
        storage = torch.empty(n, vp, device="cuda", dtype=torch.bfloat16).uniform_(-6, 6)
        logits = storage[:, :v].detach().requires_grad_()
        targets = torch.randint(0, v, (n,), device="cuda")
        for impl, upcast in (("torch", False), ("torch-fp32", True)):
            def step():
                logits.grad = None
                x = logits.float() if upcast else logits
                F.cross_entropy(x, targets).backward()

            # Check against an fp64 computation on a few rows before timing.
            step()
            with torch.no_grad():
                rows = logits[:4].double()
                want = (rows.softmax(-1) - F.one_hot(targets[:4], v).double()) / n
                err = (logits.grad[:4].double() - want).abs().max().item() * n
            if not err < 1e-2:
                print(f"classifier: {impl} off by {err} for {shape}; not timed")
                continue
            try:
                ms = time_region(step, args)
            except torch.cuda.OutOfMemoryError:
                print(f"classifier: {impl} out of memory for {shape}")
                torch.cuda.empty_cache()
                continue
            report.add({"op": "classifier_fwd_bwd", "impl": impl, "shape": shape, "N": n, "V": v,
                        "Vp": vp, "bytes": nbytes, "ms": ms,
                        "gbps": nbytes / (ms * 1e-3) / 1e9})
        del storage, logits
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
