"""PyTorch peer of bench_attention: scaled_dot_product_attention with its flash (FlashAttention-2)
and cuDNN backends, on the shapes and FLOP conventions of bench/attention.cpp (FlashAttention's:
16k tokens, hidden 2048, T 512..16k, HD 64, 128 and 256, causal and not; forward 4 B NH T^2 HD, halved
when causal; backward 2.5x the forward). Tensors are (B, T, NH, HD) in memory, as kiln's, and
handed to SDPA as (B, NH, T, HD) views.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import Report, parse_args, require_cuda, time_region

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("attention", args)
    lengths = [1024, 4096] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    for hd in (64, 128, 256):
        for causal in (False, True):
            for t in lengths:
                b, nh = 16384 // t, 2048 // hd
                fwd_flops = 4.0 * b * nh * t * t * hd / (2 if causal else 1)
                shape = f"B={b} T={t} NH={nh} HD={hd}" + (" causal" if causal else "")

                def make():
                    x = torch.empty(b, t, nh, hd, device="cuda", dtype=torch.bfloat16)
                    x.uniform_(-1, 1)
                    return x.transpose(1, 2).requires_grad_()

                q, k, v = make(), make(), make()
                dout = torch.empty(b, nh, t, hd, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1)
                for name, backend in BACKENDS.items():
                    try:
                        with sdpa_kernel(backend):
                            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    except RuntimeError as e:  # the backend does not take this shape here
                        print(f"attention: {name} skipped for {shape}: {str(e).splitlines()[0]}")
                        continue
                    # Check one head against an fp32 computation before timing.
                    with torch.no_grad():
                        ref = F.scaled_dot_product_attention(q[:1, :1].float(), k[:1, :1].float(),
                                                             v[:1, :1].float(), is_causal=causal)
                        err = (out[:1, :1].float() - ref).abs().max().item()
                    if not err < 2e-2:
                        print(f"attention: {name} off by {err} for {shape}; not timed")
                        continue

                    def fwd():
                        with sdpa_kernel(backend):
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                    ms = time_region(fwd, args)
                    report.add({"op": "attention_fwd", "impl": f"torch-{name}", "shape": shape,
                                "B": b, "T": t, "NH": nh, "HD": hd, "causal": causal, "ms": ms,
                                "tflops": fwd_flops / (ms * 1e-3) / 1e12})

                    with sdpa_kernel(backend):
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                    def bwd():
                        torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

                    ms = time_region(bwd, args)
                    report.add({"op": "attention_bwd", "impl": f"torch-{name}", "shape": shape,
                                "B": b, "T": t, "NH": nh, "HD": hd, "causal": causal, "ms": ms,
                                "tflops": 2.5 * fwd_flops / (ms * 1e-3) / 1e12})
                    del out
                del q, k, v, dout
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
