"""PyTorch peer of bench_end_to_end's Llama shapes: SmolLM2-360M and Llama-3.2-1B (RMSNorm,
rotary positions with Llama 3 scaling where the model has it, SwiGLU, GQA through SDPA, no
biases, tied embeddings), bf16 autocast with fp32 master weights, fused AdamW, torch.compile, one
optimizer step per repetition on the same shapes (T = 2048) and with the same conventions as
bench/end_to_end.cpp: tokens/s, and MFU = (6 * N + 6 * L * C * T) * tokens/s over 989 TFLOP/s
with N the published parameter count. The model is written here (the layers of Hugging Face's
LlamaForCausalLM, nothing downloaded) so the peer needs only PyTorch.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_train_step, train_step_record

# name: L, H, KV, C, I, V, theta, llama3 factor (0: none), params
SHAPES = {
    "smollm2-360m": (32, 15, 5, 960, 2560, 49152, 100000.0, 0, 361821120),
    "llama-3.2-1b": (16, 32, 8, 2048, 8192, 128256, 500000.0, 32, 1235814400),
}


def inv_freq(hd, theta, factor):
    """theta^(-2i/HD), with Hugging Face's _compute_llama3_parameters when factor > 0."""
    f = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    if factor:
        low, high, orig = 1.0, 4.0, 8192
        wavelen = 2 * math.pi / f
        smooth = (orig / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > orig / low, f / factor, f)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        between = (wavelen <= orig / low) & (wavelen >= orig / high)
        f = torch.where(between, mid, scaled)
    return f.float()


class RMSNorm(nn.Module):
    """torch.nn.RMSNorm (PyTorch >= 2.4) where it exists, written out otherwise."""

    def __init__(self, c, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.eps = eps

    def forward(self, x):
        if hasattr(F, "rms_norm"):
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype) * self.weight


# SDPA's enable_gqa arrived in PyTorch 2.5; decided once, outside the compiled graph.
HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def attention(q, k, v):
    """Causal SDPA with GQA: enable_gqa where it exists, else k and v repeated per group."""
    if HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                          is_causal=True)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Block(nn.Module):
    def __init__(self, h, kv, c, i):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, c // h
        self.input_layernorm = RMSNorm(c, 1e-5)
        self.qkv = nn.Linear(c, (h + 2 * kv) * self.hd, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)
        self.post_attention_layernorm = RMSNorm(c, 1e-5)
        self.gate_up = nn.Linear(c, 2 * i, bias=False)
        self.down_proj = nn.Linear(i, c, bias=False)

    def forward(self, x, cos, sin):
        b, t, c = x.shape
        qkv = self.qkv(self.input_layernorm(x)).view(b, t, self.h + 2 * self.kv, self.hd)
        q, k, v = qkv.split([self.h, self.kv, self.kv], dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = attention(q, k, v)
        x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, c))
        gate, up = self.gate_up(self.post_attention_layernorm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, shape):
        super().__init__()
        l, h, kv, c, i, v, theta, factor, _ = shape
        self.vocab = v
        self.embed_tokens = nn.Embedding(v, c)
        self.layers = nn.ModuleList(Block(h, kv, c, i) for _ in range(l))
        self.norm = RMSNorm(c, 1e-5)
        self.register_buffer("inv_freq", inv_freq(c // h, theta, factor), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * l) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        t = idx.shape[1]
        angles = torch.outer(torch.arange(t, device=idx.device, dtype=torch.float32), self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = F.linear(self.norm(x), self.embed_tokens.weight)
        return F.cross_entropy(logits.float().view(-1, self.vocab), targets.view(-1))


def main():
    args = parse_args(__doc__)
    require_cuda()
    torch.backends.cuda.matmul.allow_tf32 = True
    report = Report("end_to_end", args)
    cases = [("smollm2-360m", 4), ("llama-3.2-1b", 4)]
    if not args.quick:
        cases += [("smollm2-360m", 8), ("llama-3.2-1b", 8)]
    t = 2048
    for name, b in cases:
        shape = SHAPES[name]
        l, h, _, c, _, v, _, _, params = shape
        try:
            model = Llama(shape).cuda()
        except torch.cuda.OutOfMemoryError:
            print(f"llama: {name} B={b} does not fit; skipped")
            continue
        compiled = torch.compile(model)
        ms = time_train_step(model, compiled, v, b, t, args, f"llama: {name} B={b}", 1.0)
        if ms is not None:
            report.add(train_step_record("llama_train_step", f"{name} B={b} T={t}", b, t, params,
                                         l, c, ms))
        del model, compiled
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
