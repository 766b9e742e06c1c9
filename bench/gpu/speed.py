#!/usr/bin/env python3
"""GPU speed, one run (bench/gpu/run.sh runs it after the numerics): attn.attention (softmax,
sigmoid) against torch SDPA's flash, cuDNN and memory-efficient backends and FlexAttention
(torch.compile'd; softmax, and sigmoid through an exact formulation: score_mod = log σ(s + b),
out · exp(lse) = Σ σ(s + b) v), bf16, d ∈ {64, 128}, causal and not, S ∈ {512 … 16k} with
B·S = 16k and H·D = 2048, forward and forward+backward; CUDA events, medians, fresh random inputs.
TFLOP/s = 4·B·H·S²·D (halved for causal, ×3.5 with the backward). Also: recompiles across
sequence lengths (the JIT's counters), first-call times (cold compile, disk cache, warm) against
FlexAttention's first compile, and one ViT-B/16 training step with our attention vs SDPA.

Writes OUT/<gpu>-<date>.md, .png (the plot), .json (every row). A time budget (--budget-s) skips
what would not fit and says so in the report.

  speed.py --out bench/results [--budget-s 300] [--quick] [--dry-run]

--dry-run needs no GPU, torch or library: fake timings through the same tables and plot.
--device cpu runs this script's GPU path on the CPU kernels with host timers, as a smoke test
(no CUDA-only backends; slow: use e.g. --tokens 512 --seqs 128,256 --dims 64 --vit-batch 2).
"""
import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402

SEQS = (512, 1024, 2048, 4096, 8192, 16384)
TOKENS = 16384
WIDTH = 2048
OURS = ("attn-softmax", "attn-sigmoid")
SDPA = ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient")
FLEX = ("flex-softmax", "flex-sigmoid")
BASELINE = "sdpa-flash"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "results"),
                        help="folder for <gpu>-<date>.md/.png/.json")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="wall-clock budget; later sections are skipped past it")
    parser.add_argument("--quick", action="store_true",
                        help="S ∈ {1k, 4k, 16k}, no FlexAttention sigmoid, fewer repetitions")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--seqs", default=None, help="comma-separated S (default 512…16384)")
    parser.add_argument("--no-flex", action="store_true")
    parser.add_argument("--no-vit", action="store_true")
    parser.add_argument("--vit-batch", type=int, default=64)
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: fake timings, same report and plot (tests the writers)")
    parser.add_argument("--name", default=None, help="report name instead of <gpu>-<date>")
    parser.add_argument("--device", default="cuda",
                        help="cpu: a smoke test of this script's GPU path on the CPU kernels "
                             "(CPU timers; use with small --tokens and --seqs)")
    parser.add_argument("--tokens", type=int, default=TOKENS, help="B·S (default 16k)")
    args = parser.parse_args(argv)
    args.dims = tuple(int(d) for d in args.dims.split(","))
    if args.seqs:
        args.seqs = tuple(int(s) for s in args.seqs.split(","))
    else:
        args.seqs = (1024, 4096, 16384) if args.quick else SEQS
    for seq in args.seqs:
        if args.tokens % seq:
            parser.error(f"S={seq} does not divide B·S = {args.tokens}")
    for dim in args.dims:
        if WIDTH % dim:
            parser.error(f"d={dim} does not divide H·D = {WIDTH}")
    return args


def shapes(dims, seqs, tokens=TOKENS):
    for dim in dims:
        for causal in (False, True):
            for seq in seqs:
                yield dim, causal, seq, tokens // seq, WIDTH // dim


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()


def brief(exception):
    """One line of an exception (Inductor's run to pages)."""
    lines = str(exception).strip().splitlines() or [""]
    return f"{type(exception).__name__}: {lines[0][:200]}"


def slug(text):
    text = text.lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "gpu"


# ----- dry run: fake timings through the same writers ------------------------------------------
def fake_run(args):
    rng = random.Random(1234)
    rate = {"attn-softmax": 420, "attn-sigmoid": 520, "sdpa-flash": 400, "sdpa-cudnn": 480,
            "sdpa-efficient": 250, "flex-softmax": 330, "flex-sigmoid": 300}
    rows = []
    methods = OURS + SDPA + (() if args.no_flex else FLEX)
    for section in ("fwd", "fwd+bwd"):
        for dim, causal, seq, batch, heads in shapes(args.dims, args.seqs, args.tokens):
            total = report.flops(batch, heads, seq, dim, causal, section != "fwd")
            for method in methods:
                note = ""
                if method == "sdpa-efficient" and seq == 16384 and section == "fwd+bwd":
                    rows.append(dict(section=section, dim=dim, causal=causal, seq=seq, batch=batch,
                                     heads=heads, method=method, ms=None, tflops=None,
                                     note="fake failure (dry run)"))
                    continue
                tflops = rate[method] * (0.6 + 0.4 * math.log2(seq) / 14) * rng.uniform(0.9, 1.1)
                if section != "fwd":
                    tflops *= 0.7
                ms = total / (tflops * 1e12) * 1e3
                rows.append(dict(section=section, dim=dim, causal=causal, seq=seq, batch=batch,
                                 heads=heads, method=method, ms=ms, tflops=tflops, note=note))
    extras = {
        "device": "dry run (no GPU)",
        "recompiles": {"compiles": 0, "disk_hits": 8, "memory_hits": 200},
        "first_call": [("attn softmax d=64, cold (IR → PTX → load → run)", 95.0),
                       ("attn sigmoid d=64, from the disk cache", 12.0),
                       ("attn sigmoid d=64, warm (new S, same process)", 0.4),
                       ("FlexAttention softmax d=64, first call (torch.compile)", 4200.0)],
        "vit": [("SDPA (default backend)", 120.0), ("attn softmax", 118.0),
                ("attn sigmoid", 105.0)],
        "skipped": [],
    }
    return rows, extras


# ----- the real run --------------------------------------------------------------------------
def run(args, deadline):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import attn

    device = torch.device(args.device)
    cuda = device.type == "cuda"

    class CpuEvent:  # --device cpu: torch.cuda.Event's interface on the host clock
        def __init__(self, enable_timing=True):
            self.at = None

        def record(self):
            self.at = time.perf_counter()

        def elapsed_time(self, end):
            return (end.at - self.at) * 1e3

    Event = torch.cuda.Event if cuda else CpuEvent

    def synchronize():
        if cuda:
            synchronize()

    kit = hasattr(torch.ops, "attn_kit") and hasattr(torch.ops.attn_kit, "jit_statistics")
    rows = []
    extras = {"device": torch.cuda.get_device_name(0) if cuda else f"{device} (smoke test)",
              "skipped": [], "first_call": [], "vit": [], "recompiles": None, "checks": []}

    def median_ms(fn, target_ms=120.0, min_reps=5, max_reps=40):
        fn()
        synchronize()
        start, end = Event(enable_timing=True), Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        synchronize()
        once = max(start.elapsed_time(end), 1e-3)
        reps = int(min(max(target_ms / once, min_reps), max_reps))
        if args.quick:
            reps = min(reps, 10)
        starts = [Event(enable_timing=True) for _ in range(reps)]
        ends = [Event(enable_timing=True) for _ in range(reps)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))

    def relative_error(actual, expected):
        expected = expected.double()
        return ((actual.double() - expected).norm() / expected.norm()).item()

    # --- first calls: cold compile (empty cache), disk cache, warm ------------------------------
    def first_call_ms(fn):
        synchronize()
        begin = time.perf_counter()
        fn()
        synchronize()
        return (time.perf_counter() - begin) * 1e3

    small = [torch.randn(2, 16, 256, 64, device=device, dtype=torch.bfloat16) for _ in range(3)]
    if kit:
        saved = os.environ.get("ATTN_CACHE_DIR")
        with tempfile.TemporaryDirectory(prefix="attn-cold-") as cold:
            os.environ["ATTN_CACHE_DIR"] = cold
            torch.ops.attn_kit.reconfigure()
            ms = first_call_ms(lambda: attn.attention(*small, "relu(scale=0.02)", None, False))
            extras["first_call"].append(
                ("attn relu(scale=0.02) d=64 bf16, cold: IR → PTX → load → run", ms))
        if saved is not None:
            os.environ["ATTN_CACHE_DIR"] = saved
        else:
            os.environ.pop("ATTN_CACHE_DIR", None)
        torch.ops.attn_kit.reconfigure()
    else:
        extras["skipped"].append("cold first call: the op library has no attn_kit ops (not the kit)")
    ms = first_call_ms(lambda: attn.attention(*small, "sigmoid", None, False))
    extras["first_call"].append(("attn sigmoid d=64 bf16, first call, kernels in the disk cache "
                                 "(read, driver load of PTX, run)", ms))
    other = [torch.randn(2, 16, 777, 64, device=device, dtype=torch.bfloat16) for _ in range(3)]
    ms = first_call_ms(lambda: attn.attention(*other, "sigmoid", None, False))
    extras["first_call"].append(("attn sigmoid d=64 bf16, warm: first call at a new S (777)", ms))

    # --- the table -------------------------------------------------------------------------------
    flex_softmax = flex_sigmoid = None
    if not args.no_flex:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            try:
                from torch.nn.attention.flex_attention import AuxRequest
            except ImportError:  # torch < 2.9: return_lse
                AuxRequest = None
            import torch._dynamo
            # One compile per shape: keep dynamo from falling back to eager after 8.
            for limit in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, limit):
                    setattr(torch._dynamo.config, limit, 256)
            compiled_flex = torch.compile(flex_attention, dynamic=False)

            def causal_mask(b, h, q_idx, kv_idx):
                return q_idx >= kv_idx

            masks = {}

            def block_mask(seq, causal):
                if not causal:
                    return None
                if seq not in masks:
                    masks[seq] = create_block_mask(causal_mask, None, None, seq, seq, device=device)
                return masks[seq]

            def flex_softmax(q, k, v, causal):
                return compiled_flex(q, k, v, block_mask=block_mask(q.shape[2], causal))

            def flex_sigmoid(q, k, v, causal):
                bias = -math.log(k.shape[2])

                def log_sigmoid(score, b, h, q_idx, kv_idx):
                    return F.logsigmoid(score + bias)

                mask = block_mask(q.shape[2], causal)
                if AuxRequest is not None:  # natural-log lse (flex scales its base-2 one by ln 2)
                    out, aux = compiled_flex(q, k, v, score_mod=log_sigmoid, block_mask=mask,
                                             return_aux=AuxRequest(lse=True))
                    lse = aux.lse
                else:
                    out, lse = compiled_flex(q, k, v, score_mod=log_sigmoid, block_mask=mask,
                                             return_lse=True)
                return out * lse.exp().unsqueeze(-1).to(out.dtype)

            seq0 = 256
            q0, k0, v0 = (torch.randn(2, 8, seq0, 64, device=device, dtype=torch.bfloat16)
                          for _ in range(3))
            ms = first_call_ms(lambda: flex_softmax(q0, k0, v0, False))
            extras["first_call"].append(("FlexAttention softmax d=64 bf16, first call "
                                         "(torch.compile)", ms))
            try:
                error = relative_error(flex_sigmoid(q0, k0, v0, False),
                                       attn.attention(q0, k0, v0, "sigmoid", None, False))
                extras["checks"].append(f"flex-sigmoid formulation vs attn sigmoid: relative "
                                        f"error {error:.2e}")
                if not error < 2e-2:
                    extras["skipped"].append(f"flex-sigmoid: its output differs from attn "
                                             f"sigmoid (relative error {error:.2e}); not timed")
                    flex_sigmoid = None
            except Exception as exception:  # noqa: BLE001
                extras["skipped"].append(f"flex-sigmoid: {brief(exception)}")
                flex_sigmoid = None
        except Exception as exception:  # noqa: BLE001  (report, don't stop the run)
            extras["skipped"].append(f"FlexAttention: {brief(exception)}")
            flex_softmax = flex_sigmoid = None

    def method_fn(method, causal):
        if method == "attn-softmax":
            return lambda q, k, v: attn.attention(q, k, v, "softmax", None, causal)
        if method == "attn-sigmoid":
            return lambda q, k, v: attn.attention(q, k, v, "sigmoid", None, causal)
        if method in SDPA:
            backend = {"sdpa-flash": SDPBackend.FLASH_ATTENTION,
                       "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
                       "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION}[method]

            def sdpa(q, k, v):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return sdpa
        if method == "flex-softmax" and flex_softmax:
            return lambda q, k, v: flex_softmax(q, k, v, causal)
        if method == "flex-sigmoid" and flex_sigmoid:
            return lambda q, k, v: flex_sigmoid(q, k, v, causal)
        return None

    def time_shape(section, dim, causal, seq, batch, heads, methods):
        backward = section != "fwd"
        q, k, v = (torch.randn(batch, heads, seq, dim, device=device, dtype=torch.bfloat16,
                               requires_grad=backward) for _ in range(3))
        grad = torch.randn_like(q) if backward else None
        reference_out = None
        total = report.flops(batch, heads, seq, dim, causal, backward)
        timed = []
        for method in methods:
            fn = method_fn(method, causal)
            row = dict(section=section, dim=dim, causal=causal, seq=seq, batch=batch,
                       heads=heads, method=method, ms=None, tflops=None, note="")
            timed.append(row)
            if fn is None:
                row["note"] = "not available (see the skipped list)"
                continue
            try:
                if backward:
                    def step(fn=fn):
                        return torch.autograd.grad(fn(q, k, v), (q, k, v), grad)
                else:
                    def step(fn=fn):
                        with torch.no_grad():
                            return fn(q, k, v)
                if not backward and method in ("attn-softmax", "sdpa-flash"):
                    with torch.no_grad():
                        out = fn(q, k, v)
                    if reference_out is None:
                        reference_out = out
                    else:
                        error = relative_error(out, reference_out)
                        if not error < 2e-2:
                            row["note"] = (f"attn-softmax and sdpa-flash outputs differ: "
                                           f"relative {error:.2e}")
                ms = median_ms(step)
                row["ms"], row["tflops"] = ms, total / (ms * 1e-3) / 1e12
            except Exception as exception:  # noqa: BLE001
                row["note"] = brief(exception)
                synchronize()
        print(f"speed: {section} d={dim} causal={causal} S={seq}: " + ", ".join(
            f"{r['method']} {report._fmt(r['tflops'])}" for r in timed), flush=True)
        return timed

    # Pass 1: ours and SDPA's backends at every shape; pass 2: FlexAttention (a torch.compile per
    # shape), d = 128 first, while the budget lasts.
    before = torch.ops.attn_kit.jit_statistics() if kit else None
    for section in ("fwd", "fwd+bwd"):
        for dim, causal, seq, batch, heads in shapes(args.dims, args.seqs, args.tokens):
            if deadline.left() < 60:
                extras["skipped"].append(f"{section} d={dim} causal={causal} S={seq}: time budget")
                continue
            rows += time_shape(section, dim, causal, seq, batch, heads, OURS + SDPA)
    if kit:
        after = torch.ops.attn_kit.jit_statistics()
        extras["recompiles"] = {"compiles": after[0] - before[0],
                                "disk_hits": after[1] - before[1],
                                "memory_hits": after[2] - before[2]}
    # --- one ViT-B/16 training step --------------------------------------------------------------
    if args.no_vit:
        extras["skipped"].append("ViT-B/16 step: --no-vit")
    elif deadline.left() < 20:
        extras["skipped"].append("ViT-B/16 step: time budget")
    else:
        try:
            import vit
            for label, attention in (("SDPA (default backend)", "sdpa"),
                                     ("attn softmax", "softmax"), ("attn sigmoid", "sigmoid")):
                ms = vit.step_ms(attention, batch=args.vit_batch, device=device,
                                 median_ms=median_ms)
                if cuda:
                    torch.cuda.empty_cache()
                extras["vit"].append((label, ms))
        except Exception as exception:  # noqa: BLE001
            extras["skipped"].append(f"ViT-B/16 step: {brief(exception)}")
    if not args.no_flex and (flex_softmax or flex_sigmoid):
        flex_methods = tuple(m for m in FLEX if not (m == "flex-sigmoid" and args.quick))
        for section in ("fwd", "fwd+bwd"):
            for dim, causal, seq, batch, heads in shapes(sorted(args.dims, reverse=True),
                                                         args.seqs, args.tokens):
                if deadline.left() < 45:
                    extras["skipped"].append(f"FlexAttention {section} d={dim} causal={causal} "
                                             f"S={seq}: time budget")
                    continue
                rows += time_shape(section, dim, causal, seq, batch, heads, flex_methods)
    return rows, extras


def write(args, rows, extras):
    date = datetime.date.today().isoformat()
    name = args.name or (("dry-run" if args.dry_run else slug(extras["device"])) + f"-{date}")
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, name)
    header = [f"Device: {extras['device']}. Date: {date}. Host: {platform.node()}.",
              "",
              "Same run, CUDA events, median of 5-40 repetitions after a warm-up, fresh random "
              "bf16 inputs per shape. TFLOP/s = 4·B·H·S²·D (÷2 causal, ×3.5 forward+backward). "
              f"Ratios: {BASELINE}'s time over ours (> 1: ours faster). attn-sigmoid's baseline is "
              "softmax FA2 (FlashSigmoid's claim); flex-sigmoid is FlexAttention with score_mod "
              "log σ(s − ln S) and out·exp(lse)."]
    if args.dry_run:
        header.insert(0, "**DRY RUN: the timings below are made up (tests the report writers).**")
        header.insert(1, "")
    sections = [("Speed", report.speed_tables(rows, OURS, BASELINE))]
    lines = []
    recompiles = extras.get("recompiles")
    if recompiles:
        lines.append(f"JIT during the speed sweep (all lengths): {recompiles['compiles']} compiles, "
                     f"{recompiles['disk_hits']} disk-cache reads, {recompiles['memory_hits']} "
                     f"in-memory hits (target: 0 compiles)")
        lines.append("")
    if extras.get("first_call"):
        lines += ["| first call | ms |", "|---|---|"]
        lines += [f"| {label} | {ms:.1f} |" for label, ms in extras["first_call"]]
    sections.append(("Compiles and first calls", lines))
    if extras.get("vit"):
        vit_lines = [f"ViT-B/16, batch {args.vit_batch}, 224², bf16 autocast, AdamW: median step.",
                     "", "| attention | ms/step | vs SDPA |", "|---|---|---|"]
        sdpa_ms = extras["vit"][0][1]
        vit_lines += [f"| {label} | {ms:.1f} | {sdpa_ms / ms:.2f}× |" for label, ms in extras["vit"]]
        sections.append(("Training step", vit_lines))
    notes = list(extras.get("checks", [])) + [f"skipped: {s}" for s in extras.get("skipped", [])]
    if notes:
        sections.append(("Checks and skipped", [f"- {n}" for n in notes]))
    with open(base + ".json", "w") as out:  # first: the numbers survive a failing writer
        json.dump({"rows": rows, "extras": extras}, out, indent=1, default=str)
    try:
        plotter = report.write_plot(base + ".png", rows,
                                    f"attn vs SDPA/Flex — {extras['device']}")
    except Exception as exception:  # noqa: BLE001  (the tables matter more than the plot)
        print(f"speed: no plot: {type(exception).__name__}: {exception}")
        plotter = None
    if plotter:
        sections[0][1].insert(0, f"![TFLOP/s]({os.path.basename(base)}.png)")
        sections[0][1].insert(1, "")
    report.write_markdown(base + ".md", f"GPU attention: {extras['device']}, {date}", header,
                          sections)
    print(f"speed: wrote {base}.md" + (f", {base}.png ({plotter})" if plotter else
                                       " (no plotter: no PNG)") + f", {base}.json")
    return base


def main(argv=None):
    args = parse(argv)
    deadline = Deadline(args.budget_s)
    if args.dry_run:
        rows, extras = fake_run(args)
    else:
        rows, extras = run(args, deadline)
    write(args, rows, extras)
    return 0


if __name__ == "__main__":
    sys.exit(main())
