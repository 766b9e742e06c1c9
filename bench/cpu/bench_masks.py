"""CPU benchmark (not a test): what block skipping buys. One run, same threads for all:

  document mask   8 documents over S as a `mask` region (empty blocks skipped) vs the same mask
                  as a score_mod returning -inf (every block computed) vs full attention
  sliding window  causal window of 256 keys as the `window` attribute and as a mask region vs
                  full causal attention and full attention

B=1, H=2, D=64, float32, S=8192 by default, forward and forward+backward; medians of --reps
after a warm-up. Each variant is first checked against float64 at S=600 (documents of 75).

  python bench/cpu/bench_masks.py --out bench/results/cpu-masks-<date>.md
"""
import argparse
import datetime
import math
import os
import platform
import statistics
import time

import torch

import attn

SIGNATURE = ("func.func @f(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, "
             "%v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {\n"
             "  %o = attn.attention %q, %k, %v normalizer(#attn.softmax){attributes} : "
             "tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> "
             "tensor<?x?x?x64xf32>\n")


def variant(attributes="", score_mod=None, mask=None):
    text = SIGNATURE.replace("{attributes}", attributes)
    if score_mod:
        text += ("  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):\n"
                 + score_mod + "  }\n")
    if mask:
        text += "  mask {\n  ^bb0(%b: index, %h: index, %i: index, %j: index):\n" + mask + "  }\n"
    return "mlir:" + text + "  return %o : tensor<?x?x?x64xf32>\n}\n"


def same_document(length):
    return (f"    %len = arith.constant {length} : index\n"
            "    %di = arith.divsi %i, %len : index\n    %dj = arith.divsi %j, %len : index\n"
            "    %same = arith.cmpi eq, %di, %dj : index\n")


def document_region(length):
    return same_document(length) + "    attn.yield %same : i1\n"


def document_score_mod(length):
    return (same_document(length) + "    %ninf = arith.constant 0xFF800000 : f32\n"
            "    %r = arith.select %same, %s, %ninf : f32\n    attn.yield %r : f32\n")


def window_region(window):
    return (f"    %w = arith.constant {window} : index\n    %lo = arith.subi %i, %w : index\n"
            "    %after = arith.cmpi sge, %j, %lo : index\n"
            "    %before = arith.cmpi sle, %j, %i : index\n"
            "    %keep = arith.andi %after, %before : i1\n    attn.yield %keep : i1\n")


def cases(length):
    doc = length // 8
    return [
        ("full", "document", variant(), None),
        ("8 documents, mask region", "document", variant(mask=document_region(doc)),
         lambda i, j: i // doc == j // doc),
        ("8 documents, score_mod -inf", "document", variant(score_mod=document_score_mod(doc)),
         lambda i, j: i // doc == j // doc),
        ("full causal", "window", variant(" {causal}"), lambda i, j: j <= i),
        ("window 256, attribute", "window", variant(" {causal, window = 256}"),
         lambda i, j: (j <= i) & (j >= i - 256)),
        ("window 256, mask region", "window", variant(mask=window_region(256)),
         lambda i, j: (j <= i) & (j >= i - 256)),
    ]


def check(text, allowed, length=600):
    """Forward against float64 with the mask as a boolean matrix (documents of length/8)."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, length, 64, generator=generator) for _ in range(3))
    out = attn.attention(q, k, v, text)
    scores = q.double() @ k.double().transpose(-2, -1) / 8
    if allowed is not None:
        i, j = torch.arange(length).view(-1, 1), torch.arange(length).view(1, -1)
        scores = scores.masked_fill(~allowed(i, j), -math.inf)
    expected = scores.softmax(-1).nan_to_num(0) @ v.double()
    error = ((out.double() - expected).norm() / expected.norm()).item()
    assert error < 1e-5, f"relative error {error:.3g}"


def median_ms(fn, reps, clock=time.perf_counter):
    fn()
    attn.wait_for_compiles()  # time the optimized kernels, not the quick first tier
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, timed by the process's CPU time (time.process_time): "
                        "steadier than wall time on a machine others load")
    args = parser.parse_args()
    clock = time.perf_counter
    if args.cpu_time:
        torch.set_num_threads(1)
        clock = time.process_time
    length = args.length
    load_before = os.getloadavg()[0]
    for name, _, text, allowed in cases(600):
        check(text, allowed)
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, length, 64, generator=generator).requires_grad_()
               for _ in range(3))
    times = {}
    for name, _, text, _ in cases(length):
        forward = median_ms(lambda: attn.attention(q, k, v, text), args.reps, clock)
        both = median_ms(lambda: attn.attention(q, k, v, text).sum().backward(), args.reps, clock)
        times[name] = (forward, both)
        print(f"{name}: fwd {forward:.1f} ms, fwd+bwd {both:.1f} ms", flush=True)
        if name == "8 documents, mask region":
            # The CPU op caches block maps while the lengths and mask captures are unchanged
            # (the reps above reuse the warm-up's): here each call classifies afresh, and the
            # backward reads its forward's map.
            def fresh(step):
                torch.ops.attn._block_maps(True)
                step()
            cold = name + ", new block map each call"
            times[cold] = (
                median_ms(lambda: fresh(lambda: attn.attention(q, k, v, text)), args.reps, clock),
                median_ms(lambda: fresh(lambda: attn.attention(q, k, v, text).sum().backward()),
                          args.reps, clock))
            print(f"{cold}: fwd {times[cold][0]:.1f} ms, fwd+bwd {times[cold][1]:.1f} ms",
                  flush=True)

    def ratio(slow, fast, index):
        return times[slow][index] / times[fast][index]

    lines = ["| variant | fwd ms | fwd+bwd ms |", "|---|---|---|"]
    lines += [f"| {n} | {f:.1f} | {b:.1f} |" for n, (f, b) in times.items()]
    lines += ["", "| speed-up | fwd | fwd+bwd | target |", "|---|---|---|---|"]
    for slow, fast, target in [("8 documents, score_mod -inf", "8 documents, mask region", "≥ 5×"),
                               ("8 documents, score_mod -inf",
                                "8 documents, mask region, new block map each call", "≥ 5×"),
                               ("full", "8 documents, mask region", ""),
                               ("full", "window 256, attribute", "≥ 10×"),
                               ("full", "window 256, mask region", ""),
                               ("full causal", "window 256, mask region", "")]:
        lines.append(f"| {fast} vs {slow} | {ratio(slow, fast, 0):.2f}× | "
                     f"{ratio(slow, fast, 1):.2f}× | {target} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        header = (f"# Block skipping on the CPU: mask regions, windows, score_mod masks\n\n"
                  f"Measured {datetime.date.today()} on {platform.machine()} ({os.cpu_count()} CPUs,"
                  f" torch {torch.__version__}, {torch.get_num_threads()} threads); B=1, H=2, "
                  f"D=64, float32, S={length}, median of {args.reps} after a warm-up"
                  f"{' (CPU time of the process)' if args.cpu_time else ''}; every "
                  f"variant checked against float64 at S=600 first. Load average (1 min) "
                  f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n\n"
                  f"Command: `python bench/cpu/bench_masks.py --length {length} --reps "
                  f"{args.reps}{' --cpu-time' if args.cpu_time else ''} --out {args.out}`\n\n")
        with open(args.out, "w") as file:
            file.write(header + table + "\n")


if __name__ == "__main__":
    main()
