"""PyTorch peer of bench_end_to_end: a nanoGPT-style GPT-2 124M (learned positions, pre-LayerNorm,
GELU (tanh) MLP, tied embeddings, causal flash SDPA), bf16 autocast with fp32 master weights,
fused AdamW, torch.compile, one optimizer step per repetition on the same shapes and with the same
conventions as bench/end_to_end.cpp: tokens/s, and MFU = (6 * N + 6 * L * C * T) * tokens/s over
989 TFLOP/s with N = 124,439,808 (GPT-2's parameter count, vocabulary 50257; the model pads its
embedding to 50304 rows as kiln does).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_train_step, train_step_record

L, H, C, V, VP, T_MAX = 12, 12, 768, 50257, 50304, 1024
PARAMS = 124439808


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj2 = nn.Linear(4 * C, C)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (z.view(b, t, H, C // H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, C))
        return x + self.c_proj2(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VP, C)
        self.wpe = nn.Embedding(T_MAX, C)
        self.h = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "c_proj2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)[..., :V]
        return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


def main():
    args = parse_args(__doc__)
    require_cuda()
    torch.backends.cuda.matmul.allow_tf32 = True
    report = Report("end_to_end", args)
    batches = [16] if args.quick else [8, 16, 32]
    for b in batches:
        t = 1024
        model = GPT().cuda()
        compiled = torch.compile(model)
        ms = time_train_step(model, compiled, V, b, t, args, f"nanogpt: B={b}", 0.5)
        if ms is not None:
            report.add(train_step_record("gpt2_train_step", f"gpt2-124m B={b} T={t}", b, t, PARAMS,
                                         L, C, ms))
        del model, compiled
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
