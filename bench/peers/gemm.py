"""PyTorch peer of bench_gemm: the same problems (4096^3, 8192^3, GPT-2 124M's layer GEMMs with
B*T = 8192 tokens) as PyTorch would run them in a bf16 training step, so the TFLOP/s (2 M N K
over time, epilogue work not counted) compare time for time with kiln's fused epilogues:

  none       a @ b.T / a @ b / a.T @ b              (torch.matmul on bf16)
  bias       F.linear(x, w, b)
  bias_gelu  F.gelu(F.linear(x, w, b), approximate="tanh"), keeping the pre-activation
  residual   r + F.linear(x, w, b)                   (r updated in place: r.add_)
  dgelu      (dy @ w) * gelu'(pre)                   (torch.ops.aten.gelu_backward, tanh)
  bias_grad  dW += dy.T @ x (fp32 accumulation, addmm_), db += dy.sum(0)
"""
import torch
import torch.nn.functional as F

from common import Report, parse_args, require_cuda, time_region


def problems(quick):
    bt, c, v = (2048 if quick else 8192), 768, 50304
    out = []
    for n in ([4096] if quick else [4096, 8192]):
        out.append(("square", n, n, n, False, True, "none"))
        out.append(("square", n, n, n, False, False, "none"))
    out += [
        ("gpt2 qkv", bt, 3 * c, c, False, True, "bias"),
        ("gpt2 fc", bt, 4 * c, c, False, True, "bias_gelu"),
        ("gpt2 attn proj", bt, c, c, False, True, "residual"),
        ("gpt2 fc proj", bt, c, 4 * c, False, True, "residual"),
        ("gpt2 lm head", bt, v, c, False, True, "none"),
        ("gpt2 dX fc proj", bt, 4 * c, c, False, False, "dgelu"),
        ("gpt2 dX qkv", bt, c, 3 * c, False, False, "none"),
        ("gpt2 dX lm head", bt, c, v, False, False, "none"),
        ("gpt2 dW qkv", 3 * c, c, bt, True, False, "bias_grad"),
        ("gpt2 dW fc", 4 * c, c, bt, True, False, "bias_grad"),
        ("gpt2 dW fc proj", c, 4 * c, bt, True, False, "bias_grad"),
        ("gpt2 dW lm head", v, c, bt, True, False, "none_f32"),
    ]
    return out


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("gemm", args)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    for name, m, n, k, ta, tb, epi in problems(args.quick):
        a = torch.empty((k, m) if ta else (m, k), **bf).uniform_(-1, 1)
        b = torch.empty((n, k) if tb else (k, n), **bf).uniform_(-1, 1)
        op_a = a.t() if ta else a
        op_b = b.t() if tb else b
        bias = torch.empty(n, **bf).uniform_(-1, 1)
        if epi in ("none", "bias", "bias_gelu", "residual", "dgelu"):
            pre = torch.empty(m, n, **bf).uniform_(-3, 3)
            res = torch.empty(m, n, **bf).uniform_(-1, 1)

            def step():
                if epi == "none":
                    return torch.matmul(op_a, op_b)
                if epi == "bias":
                    return F.linear(op_a, b, bias) if tb else torch.addmm(bias, op_a, op_b)
                if epi == "bias_gelu":
                    p = F.linear(op_a, b, bias)
                    return p, F.gelu(p, approximate="tanh")
                if epi == "residual":
                    return res.add_(F.linear(op_a, b, bias))
                return torch.ops.aten.gelu_backward(torch.matmul(op_a, op_b), pre,
                                                    approximate="tanh")
        else:
            # dW (m, n) fp32 += op(A) @ op(B) with op(A) = dY^T; db (m) += column sums of dY.
            dw = torch.zeros(m, n, device="cuda", dtype=torch.float32)
            db = torch.zeros(m, device="cuda", dtype=torch.float32)

            def step():
                dw.add_(torch.matmul(op_a, op_b).float())
                if epi == "bias_grad":
                    db.add_(a.sum(0, dtype=torch.float32))

        # Check the GEMM part against fp32 on a few rows before timing.
        with torch.no_grad():
            got = torch.matmul(op_a[:4], op_b).float()
            want = op_a[:4].float() @ op_b.float()
            err = ((got - want).abs().max() / want.abs().max()).item()
        if not err < 2e-2:
            print(f"gemm: torch off by {err} for {name}; not timed")
            continue
        ms = time_region(step, args)
        shape = f"{m}x{n}x{k} {'T' if ta else 'N'}{'T' if tb else 'N'}" + (
            " f32" if epi in ("bias_grad", "none_f32") else "")
        op = "gemm_" + ("none" if epi == "none_f32" else epi)
        report.add({"op": op, "impl": "torch", "shape": shape, "problem": name, "ms": ms,
                    "tflops": 2.0 * m * n * k / (ms * 1e-3) / 1e12})
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
