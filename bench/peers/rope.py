"""PyTorch peer of bench_rope, bf16, on the shapes of bench/rope.cpp: Hugging Face's
apply_rotary_pos_emb (rotate-half) on Q and K of a packed QKV tensor, cos and sin precomputed per
position in bf16 as Hugging Face's rotary embedding module hands them to every layer, eager and
torch.compile. Forward returns new Q and K (Hugging Face is out of place); backward is autograd's
(dq, dk). GB/s with the byte counts of bench/rope.cpp (Q and K read and written once), so figures
compare as times.
"""
import math

import torch

from common import Report, parse_args, require_cuda, time_region


def llama3_inv_freq(hd, theta, factor, low=1.0, high=4.0, original=8192):
    """Hugging Face's _compute_llama3_parameters, in fp32 as Hugging Face computes it."""
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    wavelen = 2 * math.pi / inv
    low_wl, high_wl = original / low, original / high
    scaled = torch.where(wavelen > low_wl, inv / factor, inv)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    # q (B, T, NH, HD), k (B, T, NKV, HD); cos, sin (B, T, HD) broadcast over heads.
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


SHAPES = [("llama-3.2-1b", 4, 2048, 32, 8, 64, 0, 32.0),
          ("llama-3.1-8b", 4, 2048, 32, 8, 128, 0, 8.0),
          ("llama-3.2-1b decode", 64, 1, 32, 8, 64, 4096, 32.0)]


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("rope", args)
    bf16 = torch.bfloat16
    compiled = torch.compile(apply_rotary_pos_emb)
    for model, b, t, nh, nkv, hd, pos, factor in SHAPES[:1] if args.quick else SHAPES:
        qkv = torch.empty(b, t, nh + 2 * nkv, hd, device="cuda", dtype=bf16).uniform_(-2, 2)
        q, k = qkv[:, :, :nh], qkv[:, :, nh:nh + nkv]
        inv = llama3_inv_freq(hd, 500000.0, factor).cuda()
        positions = torch.arange(pos, pos + t, device="cuda", dtype=torch.float32)
        freqs = torch.outer(positions, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos().to(bf16).expand(b, t, hd).contiguous()
        sin = emb.sin().to(bf16).expand(b, t, hd).contiguous()
        shape = f"{model} B={b} T={t}" + (f" pos={pos}" if pos else "")
        nbytes = 2 * b * t * (nh + nkv) * hd * 2

        def add(op, impl, ms):
            report.add({"op": op, "impl": impl, "shape": shape, "B": b, "T": t, "NH": nh,
                        "NKV": nkv, "HD": hd, "dtype": "bf16", "ms": ms, "bytes": nbytes,
                        "gbps": nbytes / (ms * 1e-3) / 1e9})

        qe, _ = apply_rotary_pos_emb(q, k, cos, sin)
        qf = q.float()
        ref = qf * emb.cos().unsqueeze(0).unsqueeze(2) + rotate_half(qf) * emb.sin().unsqueeze(
            0).unsqueeze(2)
        err = (qe.float() - ref).abs().max().item()
        if not err < 2e-2 * max(1.0, ref.abs().max().item()):
            print(f"rope: torch off by {err} for {shape}; not timed")
            continue
        for impl, fn in (("torch", apply_rotary_pos_emb), ("torch-compile", compiled)):
            add("rope_fwd", impl, time_region(lambda: fn(q, k, cos, sin), args))
            qg, kg = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
            qo, ko = fn(qg, kg, cos, sin)
            dq, dk = torch.randn_like(qo), torch.randn_like(ko)
            add("rope_bwd", impl,
                time_region(lambda: torch.autograd.grad((qo, ko), (qg, kg), (dq, dk),
                                                        retain_graph=True), args))
            del qg, kg, qo, ko, dq, dk
        del qkv, q, k, cos, sin, qe, qf, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
