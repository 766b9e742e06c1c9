"""CPU benchmark (not a test): how the normalizers' forward times compare with softmax's,
measured so that the ratio survives a noisy machine.

attn-bench-cpu times one variant after another, so a machine whose speed drifts (another
process, a neighbour VM, frequency) moves one variant's figure and not another's; differences of
a few percent between variants are then noise. Here every round runs each variant once, in an
order that alternates between rounds, and each round gives one ratio (variant ms / softmax ms of
the same round); the table reports the median of those ratios and their quartiles, besides the
median times. A ratio below 1 means faster than softmax.

  python bench/cpu/bench_variant_ratio.py --threads 1,2 --out bench/results/cpu-variant-ratio-<date>.md
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

import attn


def quartiles(values):
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def measure(variants, batch, heads, length, dim, rounds, backward, generator):
    q, k, v = (torch.randn(batch, heads, length, dim, generator=generator,
                           requires_grad=backward) for _ in range(3))

    def step(variant):
        out = attn.attention(q, k, v, variant=variant)
        if backward:
            out.sum().backward()

    for variant in variants:
        step(variant)
    attn.wait_for_compiles()  # time the optimized tier, not the quick first one
    for variant in variants:
        step(variant)
    times = {variant: [] for variant in variants}
    for r in range(rounds):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            start = time.perf_counter()
            step(variant)
            times[variant].append((time.perf_counter() - start) * 1e3)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="softmax,sigmoid,relu",
                        help="the first is the reference of the ratios")
    parser.add_argument("--lengths", default="2048,4096")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--pass", dest="passes", default="fwd", help="fwd, fwd+bwd or both")
    parser.add_argument("--out")
    args = parser.parse_args()
    variants = args.variants.split(",")
    reference = variants[0]
    generator = torch.Generator().manual_seed(0)
    header = ("| pass | threads | D | S | " + " | ".join(f"{v} ms" for v in variants) + " | " +
              " | ".join(f"{v} / {reference} (quartiles)" for v in variants[1:]) + " |")
    lines = [header, "|---" * (4 + 2 * len(variants) - 1) + "|"]
    print(header, flush=True)
    for kind in args.passes.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for dim in (int(d) for d in args.dims.split(",")):
                for length in (int(s) for s in args.lengths.split(",")):
                    times = measure(variants, args.batch, args.heads, length, dim, args.rounds,
                                    kind == "fwd+bwd", generator)
                    cells = [f"{statistics.median(times[v]):.2f}" for v in variants]
                    for variant in variants[1:]:
                        ratios = [a / b for a, b in zip(times[variant], times[reference])]
                        low, high = quartiles(ratios)
                        cells.append(f"{statistics.median(ratios):.3f} ({low:.3f}-{high:.3f})")
                    lines.append(f"| {kind} | {threads} | {dim} | {length} | " +
                                 " | ".join(cells) + " |")
                    print(lines[-1], flush=True)
    if args.out:
        command = "python bench/cpu/bench_variant_ratio.py " + " ".join(sys.argv[1:])
        text = (f"# CPU: the normalizers' times against {reference}'s, rounds interleaved\n\n"
                f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on "
                f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs, torch "
                f"{torch.__version__}), B={args.batch}, H={args.heads}, float32, no mask, "
                f"{args.rounds} rounds after the optimized tier is in; each round runs every "
                f"variant once (order alternating), a ratio is per round; load average "
                f"{os.getloadavg()[0]:.1f} at the end.\n\nCommand: `{command}`\n\n")
        with open(args.out, "w") as file:
            file.write(text + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
