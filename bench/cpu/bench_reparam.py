"""CPU benchmark (not a test) of σReparam linears, issue 16's target: forward+backward of
attn.reparam_linear (the JIT-compiled attn.reparam_linear: power step, σ, the σ term of dW, dγ
and db generated; the three products on LibTorch's GEMM with γ/σ as alpha) against

  linear     torch.nn.functional.linear forward+backward on the same shapes (the target is
             ≤ 1.10× its time), and
  composite  the hand-written LibTorch composite attn::reparam_linear was before (power step in
             ATen, a scaled copy γ/σ·W, linear; closed-form backward), written out below.

ViT-B/16 shapes by default: 8×197 tokens, 768→2304 (QKV) and 768→3072 (MLP), float32, training
mode (u updated), bias. Times are medians of --reps runs after --warmup runs, the three
implementations interleaved in each repetition so that they see the same machine state; every
implementation is first checked against float64. Prints a markdown table; --out writes it with
a header (command, date, machine, threads).

  python bench/cpu/bench_reparam.py --out bench/results/reparam-cpu-dev-2026-12-02.md
"""
import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import attn


class Composite(torch.autograd.Function):
    """The removed frontend/torch/ReparamLinear.cpp composite, op for op."""

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, u, training):
        with torch.no_grad():
            w = weight.detach()
            v = F.normalize(w.mv(u), dim=0)
            stepped = F.normalize(w.t().mv(v), dim=0)
            if training:
                u.copy_(stepped)
            sigma = torch.dot(v, w.mv(stepped))
        scaled = weight * (gamma.reshape(()) / sigma)
        ctx.save_for_backward(x, weight, gamma, v, stepped, sigma, scaled)
        ctx.has_bias = bias is not None
        return F.linear(x, scaled, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, gamma, v, u, sigma, scaled = ctx.saved_tensors
        out, inp = weight.shape
        grad_y2 = grad_y.reshape(-1, out)
        grad_scaled = grad_y2.t().mm(x.reshape(-1, inp))
        inner = (grad_scaled * weight).sum()
        g = gamma.reshape(())
        grad_weight = grad_scaled * (g / sigma) - torch.outer(v, u) * (g * inner / (sigma * sigma))
        grad_gamma = (inner / sigma).reshape(gamma.shape)
        grad_x = grad_y.matmul(scaled)
        grad_bias = grad_y2.sum(0) if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias, grad_gamma, None, None


def make_inputs(tokens, in_features, out_features, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, in_features, generator=generator).requires_grad_(True)
    weight = (0.02 * torch.randn(out_features, in_features, generator=generator)).requires_grad_(True)
    bias = torch.zeros(out_features).requires_grad_(True)
    gamma = torch.ones(1).requires_grad_(True)
    u = F.normalize(torch.randn(in_features, generator=generator), dim=0)
    grad = torch.randn(tokens, out_features, generator=generator)
    return x, weight, bias, gamma, u, grad


def runners(inputs):
    x, weight, bias, gamma, u, grad = inputs
    u_ours, u_composite = u.clone(), u.clone()

    def linear():
        F.linear(x, weight, bias).backward(grad)

    def ours():
        attn.reparam_linear(x, weight, bias, gamma, u_ours, True).backward(grad)

    def composite():
        Composite.apply(x, weight, bias, gamma, u_composite, True).backward(grad)

    return {"linear": linear, "attn.reparam_linear": ours, "composite": composite}


def check_against_float64(inputs):
    """Each σReparam implementation's y and gradients vs float64 (relative error < 1e-4 at
    these sizes in float32)."""
    x, weight, bias, gamma, u, grad = inputs
    small = [t[:64].detach().clone() if t.dim() else t for t in (x, grad)]
    x64 = small[0].double().requires_grad_(True)
    w64 = weight.detach().double().requires_grad_(True)
    g64 = gamma.detach().double().requires_grad_(True)
    with torch.no_grad():
        v = F.normalize(w64.mv(u.double()), dim=0)
        stepped = F.normalize(w64.t().mv(v), dim=0)
    ref = F.linear(x64, g64 / torch.dot(v, w64.mv(stepped)) * w64, bias.detach().double())
    want = torch.autograd.grad(ref, (x64, w64, g64), small[1].double())
    for name, function in (("attn.reparam_linear", attn.reparam_linear), ("composite", Composite.apply)):
        xs = small[0].clone().requires_grad_(True)
        ws = weight.detach().clone().requires_grad_(True)
        gs = gamma.detach().clone().requires_grad_(True)
        y = function(xs, ws, bias.detach(), gs, u.clone(), True)
        got = torch.autograd.grad(y, (xs, ws, gs), small[1])
        for label, a, b in (("y", y, ref),) + tuple(zip(("dx", "dW", "dgamma"), got, want)):
            error = ((a.double() - b).norm() / b.norm()).item()
            if not error < 1e-4:
                sys.exit(f"{name}: {label} relative error {error:.2e} vs float64")


def median_times(functions, reps, warmup):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8 * 197)
    parser.add_argument("--shapes", default="768x2304,768x3072", help="IN x OUT, comma-separated")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    parser.add_argument("--out", help="write the table with a header to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = ["| shape (In→Out), tokens | linear fwd+bwd ms | attn.reparam_linear ms | × linear "
            "| composite ms | × linear |", "|---|---|---|---|---|---|"]
    for shape in args.shapes.split(","):
        in_features, out_features = (int(part) for part in shape.split("x"))
        inputs = make_inputs(args.tokens, in_features, out_features)
        check_against_float64(inputs)
        times = median_times(runners(inputs), args.reps, args.warmup)
        base = times["linear"]
        rows.append(f"| {in_features}→{out_features}, {args.tokens} | {base:.2f} | "
                    f"{times['attn.reparam_linear']:.2f} | {times['attn.reparam_linear'] / base:.3f} | "
                    f"{times['composite']:.2f} | {times['composite'] / base:.3f} |")
    table = "\n".join(rows)
    print(table)
    if args.out:
        cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"],
                             capture_output=True, text=True).stdout.strip()
        header = (f"# σReparam linear, CPU, float32, forward+backward (training)\n\n"
                  f"- command: `python bench/cpu/{' '.join(['bench_reparam.py'] + sys.argv[1:])}`\n"
                  f"- date: {datetime.date.today()}\n"
                  f"- machine: {cpu or platform.processor()}, {torch.get_num_threads()} torch "
                  f"threads, torch {torch.__version__}\n"
                  f"- medians of {args.reps} interleaved runs after {args.warmup} warm-ups\n\n")
        with open(args.out, "w") as file:
            file.write(header + table + "\n")


if __name__ == "__main__":
    main()
