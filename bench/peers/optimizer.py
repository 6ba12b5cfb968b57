"""PyTorch peer of bench_optimizer: torch.optim.AdamW(fused=True) and clip_grad_norm_ over GPT-2 124M's
parameter list (148 fp32 tensors, vocabulary padded to 50304, decay on matrices only), as
bench/optimizer.cpp builds it.

Bytes per element, each input read once and each output written once:
  "torch" AdamW step: param, exp_avg, exp_avg_sq read and written, grad read = 28
  "torch+bf16-copy": the step plus the bf16 copy of the parameters kiln writes in the same pass
                     (torch._foreach_copy_ into bf16 tensors) = 30, kiln's count
  global norm: clip_grad_norm_(foreach=True) reads the gradients (4) and scales them in place
               when it clips (8 more); max_norm is set so that it clips, as in early training.
"""
import torch

from common import Report, parse_args, require_cuda, time_region


def gpt2_124m():
    c, v, t, layers = 768, 50304, 1024, 12
    shapes = [((v, c), True), ((t, c), True)]
    for _ in range(layers):
        shapes += [((c,), False), ((c,), False), ((3 * c, c), True), ((3 * c,), False),
                   ((c, c), True), ((c,), False), ((c,), False), ((c,), False),
                   ((4 * c, c), True), ((4 * c,), False), ((c, 4 * c), True), ((c,), False)]
    shapes += [((c,), False), ((c,), False)]
    return shapes


def main():
    args = parse_args(__doc__)
    require_cuda()
    report = Report("optimizer", args)
    shapes = gpt2_124m()
    params, decay, no_decay = [], [], []
    for shape, d in shapes:
        p = torch.empty(shape, device="cuda", dtype=torch.float32).uniform_(-0.1, 0.1)
        p.grad = torch.empty_like(p).uniform_(-1e-2, 1e-2)
        params.append(p)
        (decay if d else no_decay).append(p)
    elements = sum(p.numel() for p in params)
    label = f"GPT-2 124M ({len(params)} tensors, {elements})"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    opt.step()  # creates the moments

    ms = time_region(opt.step, args)
    report.add({"op": "adamw", "impl": "torch", "shape": label, "elements": elements,
                "bytes": 28.0 * elements, "ms": ms, "gbps": 28.0 * elements / (ms * 1e-3) / 1e9})

    copies = [torch.empty_like(p, dtype=torch.bfloat16) for p in params]

    def step_and_copy():
        opt.step()
        torch._foreach_copy_(copies, params)

    ms = time_region(step_and_copy, args)
    report.add({"op": "adamw", "impl": "torch+bf16-copy", "shape": label, "elements": elements,
                "bytes": 30.0 * elements, "ms": ms,
                "gbps": 30.0 * elements / (ms * 1e-3) / 1e9})

    grads = [p.grad for p in params]
    saved = [g.clone() for g in grads]

    def clip():
        torch.nn.utils.clip_grad_norm_(params, max_norm=1e-3, foreach=True)

    ms = time_region(clip, args)
    torch._foreach_copy_(grads, saved)
    report.add({"op": "global_norm", "impl": "torch-clip_grad_norm_", "shape": label,
                "elements": elements, "bytes": 12.0 * elements, "ms": ms,
                "gbps": 12.0 * elements / (ms * 1e-3) / 1e9})

    def norm_only():
        torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    ms = time_region(norm_only, args)
    report.add({"op": "global_norm", "impl": "torch-foreach_norm", "shape": label,
                "elements": elements, "bytes": 4.0 * elements, "ms": ms,
                "gbps": 4.0 * elements / (ms * 1e-3) / 1e9})


if __name__ == "__main__":
    main()
