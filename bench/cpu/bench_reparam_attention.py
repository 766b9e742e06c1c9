"""CPU benchmark (not a test) of the fused σReparam-QKV attention block (issue 16, item 3):
forward+backward of attn.reparam_qkv_attention (one compiled block: the power step, the QKV
product on LibTorch's GEMM into one buffer, the attention tiles reading q, k, v as strided views
of it; dQ, dK, dV written into one gradient buffer that the σReparam backward reads) against

  unfused    attn.reparam_linear → split/transpose views → attn.attention (the models' path
             before the block: autograd then concatenates dQ, dK, dV into the projection's
             gradient), and
  linear+sdpa  torch.nn.functional.linear → split/transpose → scaled_dot_product_attention
             (no σReparam: what a plain ViT layer's QKV + attention costs in LibTorch).

ViT-B/16 layer shapes by default: batch 8 × 197 tokens, 768 → 3·12·64, softmax, not causal,
float32, training mode (u updated), bias. Each implementation's output and gradients are first
checked against float64 at a small batch; times are medians of --reps runs after --warmup runs,
the implementations interleaved in each repetition. Prints a markdown table; --out writes it
with a header (command, date, machine, threads, load average before and after).

  python bench/cpu/bench_reparam_attention.py --out bench/results/reparam-attention-cpu-dev-2026-12-02.md
"""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import attn


def make_inputs(batch, length, embed, heads, head_dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = 3 * heads * head_dim
    x = torch.randn(batch, length, embed, generator=generator).requires_grad_(True)
    weight = (0.02 * torch.randn(features, embed, generator=generator)).requires_grad_(True)
    bias = (0.01 * torch.randn(features, generator=generator)).requires_grad_(True)
    gamma = torch.ones(1).requires_grad_(True)
    u = F.normalize(torch.randn(embed, generator=generator), dim=0)
    grad = torch.randn(batch, length, heads * head_dim, generator=generator)
    return x, weight, bias, gamma, u, grad


def split_heads(y, heads):
    batch, length, features = y.shape
    q, k, v = y.view(batch, length, 3, heads, features // (3 * heads)).permute(2, 0, 3, 1, 4)
    return q, k, v


def merge(out):
    batch, heads, length, head_dim = out.shape
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim)


def implementations(heads):
    def fused(x, weight, bias, gamma, u):
        return merge(attn.reparam_qkv_attention(x, weight, bias, gamma, u, True, heads))

    def unfused(x, weight, bias, gamma, u):
        q, k, v = split_heads(attn.reparam_linear(x, weight, bias, gamma, u, True), heads)
        return merge(attn.attention(q, k, v))

    def linear_sdpa(x, weight, bias, gamma, u):
        q, k, v = split_heads(F.linear(x, weight, bias), heads)
        return merge(F.scaled_dot_product_attention(q, k, v))

    return {"attn.reparam_qkv_attention": fused, "unfused": unfused, "linear+sdpa": linear_sdpa}


def check_against_float64(inputs, heads):
    x, weight, bias, gamma, u, grad = inputs
    xs, gs = x[:1].detach(), grad[:1]
    params64 = [t.detach().double().requires_grad_(True) for t in (xs, weight, bias, gamma)]
    x64, w64, b64, g64 = params64
    with torch.no_grad():
        v = F.normalize(w64.mv(u.double()), dim=0)
        stepped = F.normalize(w64.t().mv(v), dim=0)
    for name, function in implementations(heads).items():
        sigma = torch.dot(v, w64.mv(stepped))
        scale = (g64 / sigma) if name != "linear+sdpa" else torch.ones((), dtype=torch.float64)
        q, k, v64 = split_heads(F.linear(x64, scale * w64, b64), heads)
        ref = merge(F.scaled_dot_product_attention(q, k, v64))
        want = torch.autograd.grad(ref, params64, gs.double(), allow_unused=True)
        params = [t.detach().clone().requires_grad_(True) for t in (xs, weight, bias, gamma)]
        y = function(*params, u.clone())
        got = torch.autograd.grad(y, params, gs, allow_unused=True)
        for label, a, b in (("y", y, ref),) + tuple(zip(("dx", "dW", "db", "dgamma"), got, want)):
            if a is None or b is None:
                continue
            error = ((a.double() - b).norm() / b.norm()).item()
            if not error < 1e-4:
                sys.exit(f"{name}: {label} relative error {error:.2e} vs float64")


def median_times(inputs, heads, reps, warmup):
    x, weight, bias, gamma, u, grad = inputs
    states = {name: u.clone() for name in implementations(heads)}
    functions = {name: (lambda f=f, name=name: f(x, weight, bias, gamma, states[name]).backward(grad))
                 for name, f in implementations(heads).items()}
    for _ in range(warmup):
        for function in functions.values():
            function()
    samples = {name: [] for name in functions}
    for _ in range(reps):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def load_average():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=197)
    parser.add_argument("--embed", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    parser.add_argument("--out", help="write the table with a header to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    inputs = make_inputs(args.batch, args.length, args.embed, args.heads, args.head_dim)
    check_against_float64(inputs, args.heads)
    load_before = load_average()
    times = median_times(inputs, args.heads, args.reps, args.warmup)
    load_after = load_average()
    fused = times["attn.reparam_qkv_attention"]
    rows = ["| implementation | fwd+bwd ms | × fused |", "|---|---|---|"]
    for name, value in times.items():
        rows.append(f"| {name} | {value:.2f} | {value / fused:.3f} |")
    table = "\n".join(rows)
    print(table)
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}")
    if args.out:
        cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"],
                             capture_output=True, text=True).stdout.strip()
        header = (f"# σReparam QKV → attention block, CPU, float32, forward+backward (training)\n\n"
                  f"- command: `python bench/cpu/{' '.join(['bench_reparam_attention.py'] + sys.argv[1:])}`\n"
                  f"- shapes: x [{args.batch}, {args.length}, {args.embed}], "
                  f"{args.heads} heads × {args.head_dim}, softmax, not causal, bias\n"
                  f"- date: {datetime.date.today()}\n"
                  f"- machine: {cpu or platform.processor()}, {os.cpu_count()} cores shared with "
                  f"other sessions, {torch.get_num_threads()} torch threads, torch {torch.__version__}\n"
                  f"- load average (1, 5, 15 min) before the timed runs: {load_before}; after: "
                  f"{load_after}\n"
                  f"- medians of {args.reps} interleaved runs after {args.warmup} warm-ups\n\n")
        with open(args.out, "w") as file:
            file.write(header + table + "\n")


if __name__ == "__main__":
    main()
