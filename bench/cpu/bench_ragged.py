"""CPU benchmark (not a test): a ragged batch (padded to its longest sequence) through
attn.attention's kv_lengths in one call, against the per-length calls the models made before
(samples grouped by length, each group on exactly its keys, outputs put back in order), against
torch SDPA with a boolean key-padding mask (what a PyTorch user would write), and the same
sequences packed without padding through attn.attention_varlen (cumulative offsets).

Speech-recipe-like shapes: H=4, D=64, float32, self-attention with sequence lengths drawn
uniformly in [S/2, S]. The padded implementations compute every query row, padding included;
the packed one only the real rows (its inputs are timed already packed, as a loader that packs
gives them). Times are medians of --reps runs after a warm-up; each implementation is first
checked against the one-call result on the real rows.

  python bench/cpu/bench_ragged.py --out bench/results/cpu-ragged-<date>.md
"""
import argparse
import datetime
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import attn


def grouped(q, k, v, lengths):
    """The models' old key-padding path: one call per distinct length on exactly its keys."""
    outputs, order = [], []
    for length in sorted(set(lengths.tolist())):
        index = (lengths == length).nonzero().flatten()
        outputs.append(attn.attention(q.index_select(0, index),
                                      k.index_select(0, index)[:, :, :length],
                                      v.index_select(0, index)[:, :, :length]))
        order.append(index)
    return torch.cat(outputs).index_select(0, torch.cat(order).argsort())


def one_call(q, k, v, lengths):
    return attn.attention(q, k, v, kv_lengths=lengths)


def sdpa_masked(q, k, v, lengths):
    keep = torch.arange(k.shape[2]).view(1, 1, 1, -1) < lengths.view(-1, 1, 1, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def pack(tensor, lengths):
    """[B, H, S, D] padded → [sum(lengths), H, D]: the real rows, one sequence after another."""
    return torch.cat([tensor[b, :, :n].transpose(0, 1) for b, n in enumerate(lengths.tolist())])


def unpack(packed, lengths, like):
    """The inverse of pack, zero rows for the padding."""
    out = torch.zeros_like(like)
    start = 0
    for b, n in enumerate(lengths.tolist()):
        out[b, :, :n] = packed[start:start + n].transpose(0, 1)
        start += n
    return out


IMPLEMENTATIONS = {"attn kv_lengths": one_call, "attn per length": grouped,
                   "sdpa + mask": sdpa_masked}


def median_ms(fn, reps, backward):
    def step():
        out = fn()
        if backward:
            out.sum().backward()
    step()
    attn.wait_for_compiles()  # time the optimized kernels, not the quick first tier
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", default="128,512,2048")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for longest in [int(x) for x in args.lengths.split(",")]:
        lengths = torch.randint(longest // 2, longest + 1, (args.batch,), generator=generator)
        lengths[0] = longest
        q, k, v = (torch.randn(args.batch, 4, longest, 64, generator=generator).requires_grad_()
                   for _ in range(3))
        real = (torch.arange(longest).view(1, 1, -1, 1) < lengths.view(-1, 1, 1, 1)).float()
        reference = one_call(q, k, v, lengths).detach() * real
        cu = torch.tensor([0] + lengths.cumsum(0).tolist())
        qp, kp, vp = (pack(t.detach(), lengths).requires_grad_() for t in (q, k, v))
        implementations = dict(IMPLEMENTATIONS)
        implementations["attn varlen (packed)"] = None
        for name, fn in implementations.items():
            out = (unpack(attn.attention_varlen(qp, kp, vp, cu, cu).detach(), lengths, q)
                   if fn is None else fn(q, k, v, lengths).detach() * real)
            error = ((out - reference).norm() / reference.norm()).item()
            assert error < 1e-5, f"{name} differs from the one-call result by {error:.3g}"
        for backward in (False, True):
            times = {name: median_ms(lambda fn=fn: fn(q, k, v, lengths), args.reps, backward)
                     for name, fn in IMPLEMENTATIONS.items()}
            times["attn varlen (packed)"] = median_ms(
                lambda: attn.attention_varlen(qp, kp, vp, cu, cu), args.reps, backward)
            rows.append((longest, "fwd+bwd" if backward else "fwd", times))
            print(rows[-1], flush=True)
    names = list(IMPLEMENTATIONS) + ["attn varlen (packed)"]
    lines = ["| S (longest) | pass | " + " | ".join(f"{n} ms" for n in names) +
             " | per length / kv_lengths | sdpa / kv_lengths | kv_lengths / varlen |",
             "|---|---|" + "---|" * (len(names) + 2)]
    for longest, kind, times in rows:
        one = times["attn kv_lengths"]
        lines.append(f"| {longest} | {kind} | " + " | ".join(f"{times[n]:.2f}" for n in names) +
                     f" | {times['attn per length'] / one:.2f}x | {times['sdpa + mask'] / one:.2f}x"
                     f" | {one / times['attn varlen (packed)']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        header = (f"# Ragged batch on the CPU: kv_lengths vs per-length calls vs SDPA + mask vs "
                  f"packed\n\n"
                  f"Measured {datetime.date.today()} on {platform.processor() or platform.machine()}"
                  f" ({os.cpu_count()} CPUs, torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads), B={args.batch}, H=4, D=64, float32, "
                  f"self-attention, lengths uniform in [S/2, S], median of {args.reps}; load "
                  f"average {os.getloadavg()[0]:.1f} at the end.\n\n"
                  f"Command: `python bench/cpu/bench_ragged.py --batch {args.batch} --lengths "
                  f"{args.lengths} --reps {args.reps} --out {args.out}`\n\n")
        with open(args.out, "w") as file:
            file.write(header + table + "\n")


if __name__ == "__main__":
    main()
