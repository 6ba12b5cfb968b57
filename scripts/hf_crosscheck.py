#!/usr/bin/env python3
"""Cross-check kiln's Hugging Face export against transformers itself (issue 17).

    scripts/hf_crosscheck.py DIR                      # DIR: an exported folder + kiln_logits.json
    scripts/hf_crosscheck.py --make BIN DATA WORK     # make the folders with kiln first, check all

DIR holds what `train_gpt --export-hf DIR` wrote and kiln_logits.json, the logits kiln's cpu
backend computed for a fixed token sequence (`generate --hf DIR --prompt-ids ... --logits-out
DIR/kiln_logits.json`). This loads DIR with transformers' AutoModelForCausalLM on the CPU in
float32, runs the same ids and compares: the largest absolute difference of the logits must be at
most --tolerance (default 1e-3: both sides compute in fp32, in different orders, on logits of
order 1-10). Prints one line per folder and exits 0 when every folder agrees, 1 otherwise.

--make BIN DATA WORK trains two tiny models for 2 steps on the token shards in DATA with BIN's
train_gpt (cpu backend) and exports them to WORK/llama (untied head, Llama 3 rope scaling, GQA)
and WORK/qwen2 (q/k/v biases, tied head), writes their kiln_logits.json with BIN's generate, then
checks both. The whole run takes a few seconds besides importing torch and transformers.
"""
import argparse
import json
import os
import subprocess
import sys

IDS = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79]


def make(bin_dir, data, work):
    variants = {
        "llama": ["--model", "llama-tiny"],
        "qwen2": ["--model", "llama-tiny", "--bias", "qkv", "--head", "tied",
                  "--rope-scaling", "none", "--rope-theta", "1000000"],
    }
    dirs = []
    for name, parts in variants.items():
        out = os.path.join(work, name)
        subprocess.run([os.path.join(bin_dir, "train_gpt"), "--data", data, *parts,
                        "--backend", "cpu", "--threads", "4", "--batch", "2", "--seq-len", "32",
                        "--steps", "2", "--eval-every", "0", "--sample-every", "0",
                        "--log-every", "1", "--export-hf", out], check=True)
        subprocess.run([os.path.join(bin_dir, "generate"), "--hf", out, "--backend", "cpu",
                        "--threads", "4", "--prompt-ids", ",".join(map(str, IDS)),
                        "--logits-out", os.path.join(out, "kiln_logits.json")], check=True)
        dirs.append(out)
    return dirs


def check(folder, tolerance):
    import torch
    from transformers import AutoModelForCausalLM

    with open(os.path.join(folder, "kiln_logits.json")) as f:
        kiln = json.load(f)
    ids = kiln["ids"]
    expected = torch.tensor(kiln["logits"], dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        got = model(torch.tensor([ids])).logits[0, :, : kiln["vocab_size"]].float()
    diff = (got - expected).abs().max().item()
    ok = got.shape == expected.shape and diff <= tolerance
    print(f"{'PASS' if ok else 'FAIL'} {folder}: {type(model).__name__}, {len(ids)} tokens, "
          f"vocab {kiln['vocab_size']}, max |logit diff| {diff:.3g} (tolerance {tolerance:g}; "
          f"logits up to {expected.abs().max().item():.3g})")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="*", help="exported folders holding kiln_logits.json")
    p.add_argument("--make", nargs=3, metavar=("BIN", "DATA", "WORK"),
                   help="make the folders with kiln's train_gpt and generate first")
    p.add_argument("--tolerance", type=float, default=1e-3)
    a = p.parse_args()
    dirs = list(a.dirs)
    if a.make:
        dirs += make(*a.make)
    if not dirs:
        p.error("give DIR or --make")
    results = [check(d, a.tolerance) for d in dirs]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
