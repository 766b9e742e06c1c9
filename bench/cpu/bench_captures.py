"""CPU benchmark (not a test): what captured tensors cost. One run, same threads for all:

  document mask   8 unequal documents over S from per-token ids (a captured i32 tensor read by
                  a `mask` region) vs 8 equal documents from ids and as an arithmetic mask region
                  (masks.mlir style, no capture) vs torch SDPA with a boolean attn_mask (the
                  unequal documents)
  bias table      a learnable relative-position table [H, 2S-1] read by a score_mod (captured,
                  requires grad) vs the same table without a gradient vs SDPA with the
                  materialized float bias [1, H, S, S] requiring grad (a leaf) and vs SDPA with
                  that bias gathered from the table inside the step (the table's equivalent)
  ALiBi slopes    learnable per-head slopes [H] (captured, requires grad) on causal softmax vs the
                  same slopes without a gradient vs SDPA with the causal ALiBi bias built from
                  the slopes inside the step

B=1, H=2, D=64, float32, softmax; medians of --reps after a warm-up (forward + backward first, so
that every kernel is compiled). GFLOP/s count the useful work, 4·B·H·D·(allowed query-key
pairs), ×3.5 for forward + backward, for every row (SDPA computes all S² pairs but is credited
with the same count); "% FMA" is that over the float32 FMA peak that attn-fma-peak measures at the
start of the run with the same thread count. Each attn variant's output and gradients (captures
included) and each SDPA formulation's output are first checked against float64 at small S.

The tiered JIT (runtime/TieredObject.h) gives a kernel a quick -O0 object first and swaps in the
optimized one from a background thread: this script sets ATTN_TIERED_COMPILE=0 before loading
the op library (unless the environment sets it), so every kernel is the optimized one from its
first call; with a disk cache (ATTN_CACHE_DIR) later runs load only optimized objects anyway.

  python bench/cpu/bench_captures.py --out bench/results/cpu-captures-<date>.md
"""
import os

os.environ.setdefault("ATTN_TIERED_COMPILE", "0")  # before the op library is loaded

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import attn  # noqa: E402

BATCH, HEADS, DIM = 1, 2, 64
# 8 unequal documents over 8192 tokens (boundaries not on block edges); other S scale them.
UNEQUAL = [1900, 1500, 1300, 1100, 900, 700, 500, 292]


# --- variants ----------------------------------------------------------------------------------

def variant(captures=(), attributes="", score_mod=None, mask=None):
    """An `mlir:` softmax variant over [?, ?, ?, 64] f32 whose regions read `captures`
    [(name, type)] (region arguments %<name>_)."""
    t = f"tensor<?x?x?x{DIM}xf32>"
    arguments = [f"%q: {t}", f"%k: {t}", f"%v: {t}"] + [f"%{n}: {ty}" for n, ty in captures]
    operands = ""
    if captures:
        operands = (" captures(" + ", ".join("%" + n for n, _ in captures) + " : "
                    + ", ".join(ty for _, ty in captures) + ")")
    region_captures = "".join(f", %{n}_: {ty}" for n, ty in captures)
    text = (f"func.func @f({', '.join(arguments)}) -> {t} {{\n"
            f"  %o = attn.attention %q, %k, %v{operands} normalizer(#attn.softmax){attributes}\n"
            f"      : {t}, {t}, {t} -> {t}\n")
    if score_mod:
        text += ("  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index"
                 f"{region_captures}):\n{score_mod}  }}\n")
    if mask:
        text += ("  mask {\n  ^bb0(%b: index, %h: index, %i: index, %j: index"
                 f"{region_captures}):\n{mask}  }}\n")
    return "mlir:" + text + f"  return %o : {t}\n}}\n"


DOCUMENT_IDS = variant([("docs", "tensor<?x?xi32>")], mask=(
    "    %di = tensor.extract %docs_[%b, %i] : tensor<?x?xi32>\n"
    "    %dj = tensor.extract %docs_[%b, %j] : tensor<?x?xi32>\n"
    "    %same = arith.cmpi eq, %di, %dj : i32\n    attn.yield %same : i1\n"))


def equal_documents(length):
    """masks.mlir's @document_mask: documents of `length` tokens, no capture."""
    return variant(mask=(
        f"    %len = arith.constant {length} : index\n"
        "    %di = arith.divsi %i, %len : index\n    %dj = arith.divsi %j, %len : index\n"
        "    %same = arith.cmpi eq, %di, %dj : index\n    attn.yield %same : i1\n"))


def relative_table(length):
    """captures.mlir's @relative_position_bias: s + table[h, i - j + S - 1], table [H, 2S-1]."""
    return variant([("table", "tensor<?x?xf32>")], score_mod=(
        f"    %reach = arith.constant {length - 1} : index\n"
        "    %d = arith.subi %i, %j : index\n    %index = arith.addi %d, %reach : index\n"
        "    %bias = tensor.extract %table_[%h, %index] : tensor<?x?xf32>\n"
        "    %r = arith.addf %s, %bias : f32\n    attn.yield %r : f32\n"))


ALIBI = variant([("slopes", "tensor<?xf32>")], attributes=" {causal}", score_mod=(
    "    %slope = tensor.extract %slopes_[%h] : tensor<?xf32>\n"
    "    %d = arith.subi %i, %j : index\n    %di = arith.index_cast %d : index to i64\n"
    "    %df = arith.sitofp %di : i64 to f32\n    %penalty = arith.mulf %slope, %df : f32\n"
    "    %r = arith.subf %s, %penalty : f32\n    attn.yield %r : f32\n"))


# --- inputs, masks and biases in plain torch ---------------------------------------------------

def unequal_lengths(length):
    scaled = [round(n * length / sum(UNEQUAL)) for n in UNEQUAL[:-1]]
    return scaled + [length - sum(scaled)]


def document_ids(lengths):
    return torch.cat([torch.full((n,), d, dtype=torch.int32)
                      for d, n in enumerate(lengths)]).view(1, -1)


def same_document(docs):
    """[1, 1, S, S] bool from ids [1, S]."""
    return docs[:, None, :, None] == docs[:, None, None, :]


def distance(length):
    i = torch.arange(length).view(-1, 1)
    j = torch.arange(length).view(1, -1)
    return i - j


def table_bias(table, length):
    """[1, H, S, S]: table[h, i - j + S - 1]."""
    return table[:, distance(length) + length - 1].unsqueeze(0)


def alibi_bias(slopes, length):
    """[1, H, S, S]: -slopes[h]·(i - j) where j <= i, -inf above the diagonal."""
    d = distance(length)
    bias = -slopes.view(-1, 1, 1) * d.to(slopes.dtype)
    return bias.masked_fill(d < 0, -math.inf).unsqueeze(0)


def inputs(length, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, HEADS, length, DIM, generator=generator).requires_grad_()
            for _ in range(3)]


# --- float64 checks ----------------------------------------------------------------------------

def relative_error(actual, expected):
    return ((actual.double() - expected).norm() / expected.norm()).item()


def reference(q, k, v, bias=None, keep=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(DIM)
    if bias is not None:
        scores = scores + bias
    if keep is not None:
        scores = scores.masked_fill(~keep, -math.inf)
    return scores.softmax(-1).nan_to_num(0) @ v


def check_attn(text, captures, expected_fn, length, name):
    """Output, dq, dk, dv and the learnable captures' gradients against float64 autograd."""
    q, k, v = inputs(length, seed=length)
    learnable = [c for c in captures if c.requires_grad]
    out = attn.attention(q, k, v, text, captures=captures)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, *learnable), grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    captures64 = [c.detach().double().requires_grad_(c.requires_grad) if c.is_floating_point()
                  else c for c in captures]
    expected = expected_fn(q64, k64, v64, captures64)
    want = torch.autograd.grad(expected, (q64, k64, v64,
                                          *[c for c in captures64 if c.requires_grad]),
                               grad.double())
    for what, actual, wanted in [("out", out, expected), *zip(
            ["dq", "dk", "dv"] + ["dcapture"] * len(learnable), got, want)]:
        error = relative_error(actual, wanted)
        assert error < 2e-5, f"{name}: {what} relative error {error:.3g}"


def check_sdpa(fn, expected, name):
    error = relative_error(fn().detach(), expected)
    assert error < 1e-5, f"{name}: relative error {error:.3g} against float64"


def check_all(length=600):
    docs = document_ids(unequal_lengths(length))
    keep = same_document(docs)
    check_attn(DOCUMENT_IDS, [docs], lambda q, k, v, c: reference(q, k, v, keep=keep), length,
               "document ids")
    check_attn(equal_documents(length // 8), [], lambda q, k, v, c: reference(
        q, k, v, keep=same_document(document_ids([length // 8] * 8))), length, "equal documents")
    table = torch.randn(HEADS, 2 * length - 1).requires_grad_()
    check_attn(relative_table(length), [table], lambda q, k, v, c: reference(
        q, k, v, bias=table_bias(c[0], length)), length, "relative table")
    slopes = torch.exp2(-torch.arange(1, HEADS + 1, dtype=torch.float32)).requires_grad_()
    check_attn(ALIBI, [slopes], lambda q, k, v, c: reference(
        q, k, v, bias=alibi_bias(c[0], length)), length, "alibi slopes")
    q, k, v = (t.detach() for t in inputs(length, seed=length))
    q64, k64, v64 = (t.double() for t in (q, k, v))
    check_sdpa(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep),
               reference(q64, k64, v64, keep=keep), "sdpa document mask")
    check_sdpa(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=table_bias(table, length)),
               reference(q64, k64, v64, bias=table_bias(table.double(), length)), "sdpa table")
    check_sdpa(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias(slopes, length)),
               reference(q64, k64, v64, bias=alibi_bias(slopes.double(), length)), "sdpa alibi")


# --- timing ------------------------------------------------------------------------------------

def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def step(forward, wrt, backward):
    """forward() -> out; with backward, the gradients of `wrt` (the leaves that require grad)."""
    def run():
        out = forward()
        if backward:
            torch.autograd.grad(out, wrt, torch.ones_like(out))
    return run


def load():
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def measure_fma_peak(threads):
    binary = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin",
                          "attn-fma-peak")
    try:  # the best of three: a peak resists interference
        return max(float(subprocess.run([binary, str(threads), "1"], capture_output=True,
                                        text=True, check=True).stdout) for _ in range(3))
    except (OSError, ValueError, subprocess.CalledProcessError) as error:
        print(f"FMA peak not measured ({binary}: {error})", file=sys.stderr)
        return None


def run_rows(section, length, pairs, cases, reps, peak, rows):
    """cases: [(name, forward, wrt)]; times fwd+bwd first (it compiles every kernel), then fwd."""
    for name, forward, wrt in cases:
        both = median_ms(step(forward, wrt, True), reps)
        fwd = median_ms(step(forward, wrt, False), reps)
        for kind, ms in (("fwd", fwd), ("fwd+bwd", both)):
            flops = 4 * BATCH * HEADS * DIM * pairs * (3.5 if kind == "fwd+bwd" else 1.0)
            rows.append({"section": section, "S": length, "name": name, "pass": kind, "ms": ms,
                         "gflops": flops / ms / 1e6,
                         "fma": 100 * flops / ms / 1e6 / peak if peak else None})
        print(f"[{load()}] {section} S={length} {name}: fwd {fwd:.1f} ms, fwd+bwd {both:.1f} ms",
              file=sys.stderr, flush=True)


def documents(length, reps, peak, rows):
    docs = document_ids(unequal_lengths(length))
    keep = same_document(docs)
    equal = length // 8
    q, k, v = inputs(length, seed=1)
    unequal_pairs = sum(n * n for n in unequal_lengths(length))
    equal_pairs = 8 * equal * equal
    run_rows("documents", length, unequal_pairs, [
        ("8 unequal documents, captured ids (mask region)",
         lambda: attn.attention(q, k, v, DOCUMENT_IDS, captures=[docs]), (q, k, v)),
    ], reps, peak, rows)
    equal_docs = document_ids([equal] * 8)
    run_rows("documents", length, equal_pairs, [
        ("8 equal documents, captured ids (mask region)",
         lambda: attn.attention(q, k, v, DOCUMENT_IDS, captures=[equal_docs]), (q, k, v)),
        ("8 equal documents, arithmetic mask region",
         lambda: attn.attention(q, k, v, equal_documents(equal)), (q, k, v)),
    ], reps, peak, rows)
    run_rows("documents", length, unequal_pairs, [
        ("SDPA, boolean attn_mask (8 unequal documents)",
         lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep), (q, k, v)),
    ], reps, peak, rows)
    density = {"8 unequal documents, captured ids (mask region)": unequal_pairs / length**2,
               "8 equal documents, captured ids (mask region)": equal_pairs / length**2,
               "8 equal documents, arithmetic mask region": equal_pairs / length**2,
               "SDPA, boolean attn_mask (8 unequal documents)": unequal_pairs / length**2}
    return density


def bias_table(length, reps, peak, rows):
    q, k, v = inputs(length, seed=2)
    generator = torch.Generator().manual_seed(3)
    table = torch.randn(HEADS, 2 * length - 1, generator=generator).requires_grad_()
    fixed = table.detach()
    bias = table_bias(fixed, length).contiguous().requires_grad_()
    text = relative_table(length)
    run_rows("table", length, length * length, [
        ("table captured, requires grad",
         lambda: attn.attention(q, k, v, text, captures=[table]), (q, k, v, table)),
        ("table captured, no grad",
         lambda: attn.attention(q, k, v, text, captures=[fixed]), (q, k, v)),
        ("SDPA, float bias [1,H,S,S] leaf, requires grad",
         lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), (q, k, v, bias)),
        ("SDPA, bias gathered from the table in the step",
         lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=table_bias(table, length)),
         (q, k, v, table)),
    ], reps, peak, rows)


def alibi(length, reps, peak, rows):
    q, k, v = inputs(length, seed=4)
    slopes = torch.exp2(-8 * torch.arange(1, HEADS + 1, dtype=torch.float32) / HEADS)
    learnable = slopes.clone().requires_grad_()
    run_rows("alibi", length, length * (length + 1) // 2, [
        ("slopes captured, requires grad",
         lambda: attn.attention(q, k, v, ALIBI, captures=[learnable]), (q, k, v, learnable)),
        ("slopes captured, no grad",
         lambda: attn.attention(q, k, v, ALIBI, captures=[slopes]), (q, k, v)),
        ("SDPA, causal ALiBi bias built from the slopes in the step",
         lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias(learnable, length)),
         (q, k, v, learnable)),
    ], reps, peak, rows)


def table_for(rows, section, header_extra=None):
    lines = ["| S | variant | pass | ms | GFLOP/s | % FMA |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row["section"] != section:
            continue
        fma = f"{row['fma']:.1f} %" if row["fma"] is not None else "n/a"
        lines.append(f"| {row['S']} | {row['name']} | {row['pass']} | {row['ms']:.1f} | "
                     f"{row['gflops']:.1f} | {fma} |")
    return "\n".join(lines)


def ratios(rows, section, pairs):
    """Same-run ratios: slow's time over fast's (> 1: fast is faster)."""
    times = {(r["S"], r["name"], r["pass"]): r["ms"] for r in rows if r["section"] == section}
    lengths = sorted({r["S"] for r in rows if r["section"] == section})
    lines = ["| S | ratio | fwd | fwd+bwd |", "|---|---|---|---|"]
    for length in lengths:
        for fast, slow, label in pairs:
            if (length, fast, "fwd") not in times or (length, slow, "fwd") not in times:
                continue
            cells = [times[(length, slow, p)] / times[(length, fast, p)]
                     for p in ("fwd", "fwd+bwd")]
            lines.append(f"| {length} | {label} | {cells[0]:.2f}× | {cells[1]:.2f}× |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--document-length", type=int, default=8192)
    parser.add_argument("--lengths", default="1024,4096", help="S of the table and ALiBi parts")
    parser.add_argument("--parts", default="documents,table,alibi")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    parts = args.parts.split(",")
    lengths = [int(s) for s in args.lengths.split(",")]
    threads = torch.get_num_threads()
    loads = [("start", load())]
    print("checking against float64 at S=600 ...", file=sys.stderr, flush=True)
    check_all()
    peak = measure_fma_peak(threads)
    loads.append(("after the FMA peak", load()))
    rows, density = [], {}
    if "documents" in parts:
        density = documents(args.document_length, args.reps, peak, rows)
        loads.append(("after the document masks", load()))
    for length in lengths:
        if "table" in parts:
            bias_table(length, args.reps, peak, rows)
            loads.append((f"after the tables at S={length}", load()))
        if "alibi" in parts:
            alibi(length, args.reps, peak, rows)
            loads.append((f"after ALiBi at S={length}", load()))

    sections = []
    if "documents" in parts:
        sections.append(
            f"## Document masks, S = {args.document_length}\n\nUnequal documents: "
            f"{unequal_lengths(args.document_length)} tokens (allowed pairs "
            f"{100 * density['8 unequal documents, captured ids (mask region)']:.1f} % of S²); "
            f"equal documents: 8 × {args.document_length // 8} "
            f"({100 * density['8 equal documents, arithmetic mask region']:.1f} % of S²). "
            "GFLOP/s count each row's allowed pairs, so the two masks compare per unit of useful "
            "work; SDPA is credited with the unequal documents' pairs.\n\n"
            + table_for(rows, "documents") + "\n\n" + ratios(rows, "documents", [
                ("8 unequal documents, captured ids (mask region)",
                 "SDPA, boolean attn_mask (8 unequal documents)",
                 "SDPA + boolean mask / captured ids"),
                ("8 equal documents, arithmetic mask region",
                 "8 equal documents, captured ids (mask region)",
                 "equal documents: captured ids / arithmetic region (the capture's cost)"),
                ("8 equal documents, captured ids (mask region)",
                 "8 unequal documents, captured ids (mask region)",
                 "captured ids: unequal / equal documents (more allowed pairs, unaligned edges)"),
            ]))
    if "table" in parts:
        sections.append(
            "## Relative-position bias table [H, 2S-1]\n\n" + table_for(rows, "table") + "\n\n"
            + ratios(rows, "table", [
                ("table captured, no grad", "table captured, requires grad",
                 "table's gradient: requires grad / no grad"),
                ("table captured, requires grad", "SDPA, float bias [1,H,S,S] leaf, requires grad",
                 "SDPA bias leaf / captured table (both with gradient)"),
                ("table captured, requires grad", "SDPA, bias gathered from the table in the step",
                 "SDPA gathered bias / captured table (both with gradient)"),
            ]))
    if "alibi" in parts:
        sections.append(
            "## Learnable ALiBi slopes [H], causal softmax\n\n" + table_for(rows, "alibi") + "\n\n"
            + ratios(rows, "alibi", [
                ("slopes captured, no grad", "slopes captured, requires grad",
                 "slopes' gradient: requires grad / no grad"),
                ("slopes captured, requires grad",
                 "SDPA, causal ALiBi bias built from the slopes in the step",
                 "SDPA bias from slopes / captured slopes (both with gradient)"),
            ]))
    body = "\n\n".join(sections)
    print(body)
    if args.out:
        cpu = platform.machine()
        try:
            with open("/proc/cpuinfo") as info:
                cpu = next(line.split(":", 1)[1].strip() for line in info
                           if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        command = ("python bench/cpu/bench_captures.py " + " ".join(sys.argv[1:])).strip()
        peak_text = f"{peak:.1f} GFLOP/s" if peak else "not measured"
        header = (
            "# Captured tensors on the CPU: document ids, a learnable bias table, learnable ALiBi "
            f"slopes\n\nMeasured {datetime.date.today()} on {cpu} ({os.cpu_count()} CPUs, torch "
            f"{torch.__version__}, {threads} threads for attn and SDPA alike); B={BATCH}, "
            f"H={HEADS}, D={DIM}, float32, softmax, median of {args.reps} after a warm-up "
            "(forward + backward timed first, then the forward). float32 FMA peak (attn-fma-peak, "
            f"{threads} threads, best of 3 × 1 s, this run): {peak_text}. "
            f"ATTN_TIERED_COMPILE={os.environ.get('ATTN_TIERED_COMPILE')}: every kernel is the "
            "optimized tier from its first call. Every attn variant checked against float64 "
            "(output, dq, dk, dv and the learnable capture's gradient) and every SDPA "
            "formulation's output at S=600 first. Load average (1, 5, 15 min) during the run: "
            + "; ".join(f"{when} {value}" for when, value in loads) + ".\n\n"
            f"Command: `{command}`\n\n")
        with open(args.out, "w") as file:
            file.write(header + body + "\n")


if __name__ == "__main__":
    main()
