"""CPU benchmark (not a test): attn.attention against what a CPU user of PyTorch 2.x would pick,
in one run, with the same intra-op threads for everyone:

  sdpa      torch.nn.functional.scaled_dot_product_attention (its fused CPU flash kernel)
  flex      torch.compile'd torch.nn.attention.flex_attention (fullgraph); sigmoid through an
            exact formulation: score_mod = logsigmoid(s + b), then out · exp(lse) undoes the
            normalization, so out = Σ_j σ(s_ij + b)·v_j. On the CPU (torch 2.11) compiled flex
            has no backward and no LSE output, so it has softmax forward cells only
  unfused   matmul → softmax / sigmoid → matmul

B=1, H=2, no mask, forward and forward+backward, D ∈ {64, 128}, float32 and bfloat16, S from 512
to 16384. Each implementation is first checked against float64 at S=300 (a failed check stops the
run). Times are medians of --reps runs after a warm-up (one run and no warm-up at
S ≥ 8192, but for flex's compile); GFLOP/s counts
4·B·H·S²·D for the forward and 2.5× that for the backward (FlashAttention's convention); "% GEMM"
is that rate over torch.mm's own rate on a 4096² product of the same dtype in the same run, the
machine's practical matmul peak; "% FMA" is it over the float32 FMA peak that attn-fma-peak
measures (register-only vector FMA chains on the same threads). Prints a markdown table; --out writes it with a header, --csv the
rows, --plot a PNG (gnuplot).

  python bench/cpu/bench_baselines.py --out bench/results/cpu-baselines.md --plot ....png
"""
import argparse
import csv
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import attn

try:
    from torch.nn.attention.flex_attention import flex_attention
except ImportError:  # torch < 2.5
    flex_attention = None

BATCH, HEADS = 1, 2
IMPLEMENTATIONS = ("ours", "sdpa", "flex", "unfused")


def sigmoid_bias(keys):
    return -math.log(keys)  # the sigmoid variant's default, −ln Sk


class Flex:
    """torch.compile'd flex_attention (fullgraph: a failed compile raises instead of silently
    running eager flex_attention, which materializes the scores), compiled once per shape."""

    def __init__(self):
        # Every (shape, dtype) is one compiled entry; past the default limit (8) dynamo would
        # fall back to eager flex_attention.
        torch._dynamo.config.cache_size_limit = 1024
        self.compiled = (torch.compile(flex_attention, dynamic=False, fullgraph=True)
                         if flex_attention else None)

    def __call__(self, q, k, v, normalizer):
        if self.compiled is None:
            raise NotImplementedError("flex_attention needs torch >= 2.5")
        if q.requires_grad:
            # Checked here: a failed compile would leave dynamo running this frame eagerly.
            raise NotImplementedError("compiled flex_attention has no CPU backward")
        if normalizer != "softmax":
            # The exact sigmoid through flex (score_mod = logsigmoid(s + b), then out·exp(lse))
            # needs the LSE, which compiled flex_attention does not return on the CPU.
            raise NotImplementedError("compiled flex_attention on CPU cannot return the LSE "
                                      "that the exact sigmoid formulation needs")
        return self.compiled(q, k, v)


def unfused(q, k, v, normalizer):
    scores = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1]))
    if normalizer == "softmax":
        p = scores.softmax(-1)
    else:
        p = torch.sigmoid(scores + sigmoid_bias(k.shape[2]))
    return p @ v


def make_runner(name, normalizer, flex):
    if name == "ours":
        return lambda q, k, v: attn.attention(q, k, v, normalizer)
    if name == "sdpa":
        if normalizer != "softmax":
            return None  # SDPA is softmax only
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
    if name == "flex":
        return lambda q, k, v: flex(q, k, v, normalizer)
    return lambda q, k, v: unfused(q, k, v, normalizer)


def reference(q, k, v, normalizer):
    return unfused(q.double(), k.double(), v.double(), normalizer)


def random_inputs(length, dim, dtype, grad, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, HEADS, length, dim, generator=generator).to(dtype)
            .requires_grad_(grad) for _ in range(3)]


def timed(fn, reps, warm_up=True):
    if warm_up:
        fn()  # JIT or torch.compile, allocator pools
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def step(runner, q, k, v, backward):
    def run():
        out = runner(q, k, v)
        if backward:
            torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    return run


def measure_fma_peak(binary, threads):
    try:
        result = subprocess.run([binary, str(threads), "2"], capture_output=True, text=True,
                                check=True)
        return float(result.stdout.strip())
    except (OSError, ValueError, subprocess.CalledProcessError) as error:
        print(f"FMA peak not measured ({binary}: {error})", file=sys.stderr)
        return None


def gemm_rate(dtype, size=4096, reps=5):
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    ms = timed(lambda: torch.mm(a, b), reps)
    return 2 * size**3 / ms / 1e6  # GFLOP/s


def check_numerics(normalizers, dims, dtypes, flex):
    failures = []
    for normalizer in normalizers:
        for dim in dims:
            for dtype in dtypes:
                q, k, v = random_inputs(300, dim, dtype, True, seed=dim)
                want = reference(q, k, v, normalizer)
                grad = torch.randn_like(want)
                want_grads = torch.autograd.grad(want, (q, k, v), grad)
                tolerance = 1e-5 if dtype == torch.float32 else 2e-2
                for name in IMPLEMENTATIONS:
                    runner = make_runner(name, normalizer, flex)
                    if runner is None:
                        continue
                    # The forward alone first: flex has no CPU backward, but its forward is
                    # timed and must be checked on its own.
                    try:
                        out = runner(q.detach(), k.detach(), v.detach())
                    except NotImplementedError as error:  # reported; the cells become n/a
                        print(f"  {name} {normalizer} D={dim} {dtype}: unavailable: {error}",
                              file=sys.stderr)
                        continue
                    errors = [relative_error(out, want)]
                    try:
                        out = runner(q, k, v)
                        grads = torch.autograd.grad(out, (q, k, v), grad.to(out.dtype))
                        errors += [relative_error(g, w) for g, w in zip(grads, want_grads)]
                    except NotImplementedError as error:  # reported; the cell becomes n/a
                        print(f"  {name} {normalizer} D={dim} {dtype}: no backward: "
                              f"{str(error).splitlines()[0][:160]}", file=sys.stderr)
                    if max(errors) > tolerance:
                        failures.append(f"{name} {normalizer} D={dim} {dtype}: relative errors "
                                        f"out/dq/dk/dv {[f'{e:.1e}' for e in errors]}")
    return failures


def relative_error(actual, expected):
    return ((actual.double() - expected).norm() / expected.norm()).item()


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--normalizers", default="softmax,sigmoid")
    parser.add_argument("--passes", default="fwd,fwd+bwd")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out")
    parser.add_argument("--csv")
    parser.add_argument("--plot")
    parser.add_argument("--fma-peak-binary", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin", "attn-fma-peak"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    lengths = [int(s) for s in args.lengths.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    normalizers = args.normalizers.split(",")
    passes = args.passes.split(",")
    flex = Flex()

    print("checking numerics against float64 at S=300 ...", file=sys.stderr)
    failures = check_numerics(normalizers, dims, dtypes, flex)
    if failures:
        print("numerics failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1

    peaks = {dtype: gemm_rate(dtype) for dtype in dtypes}
    fma_peak = measure_fma_peak(args.fma_peak_binary, args.threads)
    cells = [(n, p, d, t, s) for n in normalizers for p in passes for d in dims for t in dtypes
             for s in lengths]
    rows, started = [], time.time()
    for index, (normalizer, pass_name, dim, dtype, length) in enumerate(cells):
        backward = pass_name == "fwd+bwd"
        flops = 4 * BATCH * HEADS * length * length * dim * (3.5 if backward else 1.0)
        reps = 1 if length >= 8192 else args.reps
        row = {"normalizer": normalizer, "pass": pass_name, "D": dim, "dtype": dtype_name(dtype),
               "S": length}
        for name in IMPLEMENTATIONS:
            runner = make_runner(name, normalizer, flex)
            if runner is None:
                continue
            q, k, v = random_inputs(length, dim, dtype, backward, seed=length)
            try:
                # At S ≥ 8192 only flex needs its warm-up (a compile per shape); the others'
                # kernels were compiled at the smaller lengths, and a call there takes seconds.
                warm_up = length < 8192 or name == "flex"
                row[name] = timed(step(runner, q, k, v, backward), reps, warm_up)
            except Exception as error:  # noqa: BLE001 — out of memory or unsupported: n/a
                print(f"  {name}: {str(error).splitlines()[0][:160]}", file=sys.stderr)
            del q, k, v
        if "ours" in row:
            row["ours GFLOP/s"] = flops / row["ours"] / 1e6
            row["% GEMM"] = 100 * row["ours GFLOP/s"] / peaks[dtype]
            if fma_peak:
                row["% FMA"] = 100 * row["ours GFLOP/s"] / fma_peak
        rows.append(row)
        elapsed = time.time() - started
        print(f"[{index + 1}/{len(cells)}] {elapsed:6.0f} s  {normalizer} {pass_name} D={dim} "
              f"{dtype_name(dtype)} S={length}: " + ", ".join(
                  f"{n} {row[n]:.1f} ms" for n in IMPLEMENTATIONS if n in row), file=sys.stderr)

    table = markdown(rows)
    print(table)
    if args.out:
        header = describe(args, peaks, fma_peak)
        with open(args.out, "w") as out:
            out.write(header + "\n\n" + table + "\n")
    if args.csv or args.plot:
        path = args.csv or args.plot + ".csv"
        write_csv(rows, path)
        if args.plot:
            plot(path, args.plot, rows)
    return 0


def ratio(row, baseline):
    if "ours" in row and baseline in row:
        return f"{row[baseline] / row['ours']:.2f}x"
    return "n/a"


def markdown(rows):
    lines = ["| normalizer | pass | D | dtype | S | ours ms | ours GFLOP/s | % GEMM | % FMA | "
             "sdpa ms | flex ms | unfused ms | vs sdpa | vs flex | vs unfused |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ms = [f"{row[n]:.2f}" if n in row else "n/a" for n in IMPLEMENTATIONS]
        rate = f"{row['ours GFLOP/s']:.1f}" if "ours" in row else "n/a"
        peak = f"{row['% GEMM']:.0f} %" if "ours" in row else "n/a"
        fma = f"{row['% FMA']:.0f} %" if "% FMA" in row else "n/a"
        lines.append(f"| {row['normalizer']} | {row['pass']} | {row['D']} | {row['dtype']} | "
                     f"{row['S']} | {ms[0]} | {rate} | {peak} | {fma} | {ms[1]} | {ms[2]} | "
                     f"{ms[3]} | "
                     f"{ratio(row, 'sdpa')} | {ratio(row, 'flex')} | {ratio(row, 'unfused')} |")
    return "\n".join(lines)


def describe(args, peaks, fma_peak):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    command = "python " + " ".join(sys.argv)
    peak_text = ", ".join(f"{dtype_name(d)} {p:.0f} GFLOP/s" for d, p in peaks.items())
    return (f"# CPU: attn.attention vs SDPA, FlexAttention and the unfused path\n\n"
            f"Command: `{command}`, {datetime.date.today()}, {cpu}, {args.threads} threads for "
            f"every implementation, torch {torch.__version__}, attn {attn.__version__}. "
            f"B={BATCH}, H={HEADS}, no mask. Median of {args.reps} runs after a warm-up (one run, "
            f"no warm-up at S ≥ 8192 but flex's compile). \"vs X\" is X's time over ours (> 1: we are faster). GEMM rate "
            f"measured in this run (torch.mm, 4096²): {peak_text}; float32 FMA peak "
            f"(attn-fma-peak, {args.threads} threads): "
            f"{f'{fma_peak:.0f} GFLOP/s' if fma_peak else 'not measured'}. Sigmoid has no SDPA "
            f"column (SDPA is softmax only); compiled flex on the CPU has neither a backward nor the "
            f"LSE output that an exact sigmoid needs (logsigmoid score_mod, then out·exp(lse)), "
            f"so it has softmax forward cells only. Every cell's implementation passed a float64 "
            f"check at S=300 first (forward; and gradients where it has a backward).")


def write_csv(rows, path):
    fields = ["normalizer", "pass", "D", "dtype", "S", *IMPLEMENTATIONS]
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot(csv_path, png_path, rows):
    """Time against S per implementation, one panel per (dtype, normalizer, pass), D=64."""
    dtypes = sorted({row["dtype"] for row in rows}, key=lambda name: name != "float32")
    script = ["set terminal pngcairo size 2000,%d" % (450 * len(dtypes)),
              f"set output '{png_path}'", "set datafile separator ','", "set logscale xy",
              "set key top left", "set xlabel 'S'", "set ylabel 'ms'",
              f"set multiplot layout {len(dtypes)},4"]
    for dtype in dtypes:
        for normalizer in ("softmax", "sigmoid"):
            for pass_name in ("fwd", "fwd+bwd"):
                script.append(f"set title '{normalizer} {pass_name}, D=64, {dtype}'")
                filter_ = (f"(strcol(1) eq '{normalizer}' && strcol(2) eq '{pass_name}' && "
                           f"strcol(3) eq '64' && strcol(4) eq '{dtype}')")
                plots = [f"'{csv_path}' using ({filter_} ? $5 : NaN):(column('{name}') > 0 ? "
                         f"column('{name}') : NaN) with linespoints title '{name}'"
                         for name in IMPLEMENTATIONS]
                script.append("plot " + ", ".join(plots))
    script.append("unset multiplot")
    try:
        subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"plot skipped: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
