#!/usr/bin/env python3
"""Numerics of the torch op on the GPU (bench/gpu/run.sh, before any timing): every variant of
bench/gpu/variants.py (softmax, sigmoid, relu, a custom IR normalizer, ALiBi and softcap
score_mods) × causal × D ∈ {64, 128} × bf16/f16, GQA (Hq = 4·Hkv or 2·Hkv) and odd lengths:
forward O and LSE (row-wise normalizers) and dQ, dK, dV through attn.attention's autograd
(CudaAttention → runtime/GpuKernels, the real launcher), against float64
(test/python/reference.py's attention_general, on the CPU). Then the variants whose regions read
captured tensors (variants.CAPTURES: learned ALiBi slopes, a relative-position bias table,
a document mask from ids), and their errors: a region that reads outside a capture, a capture
that requires grad. Outputs are poisoned first (the allocator's next blocks hold NaN); any NaN
fails.

  numerics.py [--device cuda] [--quick] [--tolerance 1e-2] [--only NAME]

Exit status 0 when every case is within tolerance, 1 otherwise. `--device cpu` runs the same
checks on the CPU kernels (float32, for testing this script without a GPU).
"""
import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
for candidate in (os.path.join(HERE, "..", "python"),  # the kit: python/reference.py
                  os.path.join(HERE, "..", "..", "test", "python")):  # the repository
    if os.path.exists(os.path.join(candidate, "reference.py")):
        sys.path.insert(0, os.path.abspath(candidate))
        break
import variants  # noqa: E402

SHAPES = ((2, 8, 2, 259, 381), (1, 6, 3, 517, 389))  # B, Hq, Hkv, Sq, Sk


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="D = 64, bf16 only")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="relative error bound (default 1e-2 for bf16/f16, 1e-4 for f32)")
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--seed", type=int, default=20261202)
    return parser.parse_args(argv)


def log2_sum_exp(q, k, causal, score_mod):
    """Base-2 log-sum-exp of the scaled, score_mod'ed, allowed scores (float64), [B, Hq, Sq]."""
    import torch
    import reference

    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = reference._allowed_by_attributes(q.shape[2], k.shape[2], causal, None)
    if score_mod is not None:
        b = torch.arange(q.shape[0]).view(-1, 1, 1, 1)
        h = torch.arange(q.shape[1]).view(1, -1, 1, 1)
        i = torch.arange(q.shape[2]).view(1, 1, -1, 1)
        j = torch.arange(k.shape[2]).view(1, 1, 1, -1)
        scores, _ = score_mod(scores, b, h, i, j)
    scores = scores.masked_fill(~allowed, -math.inf)
    return torch.logsumexp(scores, -1) / math.log(2)


def check_case(torch, attn, reference, name, dim, causal, dtype_name, shape, device, tolerance):
    batch, heads, kv_heads, queries, keys = shape
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dtype_name]
    variant = variants.op_variant(name, dim)
    q = torch.randn(batch, heads, queries, dim, device=device, dtype=dtype)
    k = torch.randn(batch, kv_heads, keys, dim, device=device, dtype=dtype)
    v = torch.randn(batch, kv_heads, keys, dim, device=device, dtype=dtype)
    grad = torch.randn(batch, heads, queries, dim, device=device, dtype=dtype)
    captures = (variants.capture_inputs(name, batch, heads, queries, keys, torch, None)
                if name in variants.CAPTURES else [])
    on_device = [c.to(device) for c in captures]
    if device.type == "cuda":  # poison: the outputs' blocks (small and large pool) come from here
        poison = [torch.full((n,), float("nan"), device=device) for n in (1 << 17,) * 6 + (32 << 20,)]
        poison.clear()
    out, lse = torch.ops.attn._attention_forward(q, k, v, variant, None, causal, None,
                                                 on_device or None)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    dq, dk, dv = torch.autograd.grad(
        attn.attention(*leaves, variant, None, causal, captures=on_device), leaves, grad)
    if device.type == "cuda":
        torch.cuda.synchronize()

    normalizer, score_mod = (variants.capture_reference(name, captures) if captures
                             else variants.reference_args(name))
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    expected = reference.attention_general(q64, k64, v64, normalizer=normalizer, causal=causal,
                                           score_mod=score_mod)
    expected.backward(grad.cpu().double())
    errors = {}
    for label, actual, wanted in (("O", out, expected), ("dQ", dq, q64.grad),
                                  ("dK", dk, k64.grad), ("dV", dv, v64.grad)):
        actual = actual.detach().cpu().double()
        errors[label] = math.inf if actual.isnan().any() else reference.relative_error(actual,
                                                                                        wanted)
    if name in variants.ROW_WISE:
        with torch.no_grad():
            wanted = log2_sum_exp(q64.detach(), k64.detach(), causal, score_mod)
        actual = lse.detach().cpu().double()
        finite = torch.isfinite(wanted)
        errors["LSE"] = (math.inf if actual[finite].isnan().any() else
                         reference.relative_error(actual[finite], wanted[finite]))
    worst = max(errors.values())
    return worst <= tolerance, errors


def check_capture_errors(torch, attn, device):
    """A region that reads outside a capture, and a capture that requires grad (the GPU kernels
    derive no capture gradients), are errors that say so, never results."""
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    q = torch.randn(1, 4, 33, 64, device=device, dtype=dtype)
    variant = variants.op_variant("alibi_slopes", 64)
    problems = []
    try:  # slopes for 3 of 4 heads: head 3 reads slopes[3]
        attn.attention(q, q, q, variant, None, True, captures=[torch.ones(3, device=device)])
        problems.append("a read outside a capture returned a result")
    except RuntimeError as error:
        if "outside capture 0" not in str(error):
            problems.append(f"the out-of-bounds error does not name the capture: {error}")
    if device.type == "cuda":
        slopes = torch.ones(4, device=device, requires_grad=True)
        try:
            attn.attention(q, q, q, variant, None, True, captures=[slopes]).sum().backward()
            problems.append("a capture that requires grad ran on CUDA (no gradient is derived)")
        except RuntimeError as error:
            if "grad" not in str(error):
                problems.append(f"the capture-gradient error does not say so: {error}")
    return problems


def main(argv=None):
    args = parse(argv)
    import torch
    import attn  # loads the op library ($ATTN_TORCH_LIBRARY)
    import reference

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("numerics: no CUDA device")
        return 77
    torch.manual_seed(args.seed)
    only = set(args.only.split(",")) if args.only else None
    cases = [c for c in list(variants.numerics_matrix(args.quick)) +
             list(variants.captures_matrix(args.quick)) if not only or c[0] in only]
    failures = 0
    start = time.monotonic()
    print(f"numerics: {len(cases)} variants on {args.device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"shapes B,Hq,Hkv,Sq,Sk = {SHAPES}", flush=True)
    for index, (name, dim, causal, dtype) in enumerate(cases):
        if device.type == "cpu":
            dtype = "f32"
        tolerance = args.tolerance or (1e-4 if dtype == "f32" else 1e-2)
        shape = SHAPES[index % len(SHAPES)]
        label = f"{name}{'-causal' if causal else ''}-d{dim}-{dtype} {shape}"
        try:
            ok, errors = check_case(torch, attn, reference, name, dim, causal, dtype, shape,
                                    device, tolerance)
            detail = " ".join(f"{k}={v:.2e}" for k, v in errors.items())
        except Exception as exception:  # noqa: BLE001  (a failed case, not a crashed run)
            ok, detail = False, f"{type(exception).__name__}: {str(exception).splitlines()[0]}"
        failures += not ok
        print(f"{'ok' if ok else 'FAIL':4} {label}: {detail}", flush=True)
    if any(case[0] in variants.CAPTURES for case in cases):
        try:
            problems = check_capture_errors(torch, attn, device)
        except Exception as exception:  # noqa: BLE001
            problems = [f"{type(exception).__name__}: {str(exception).splitlines()[0]}"]
        failures += bool(problems)
        print(f"{'FAIL' if problems else 'ok':4} capture errors: "
              f"{'; '.join(problems) or 'read outside a capture and capture gradients refused'}")
    print(f"numerics: {len(cases) - failures} of {len(cases)} variants within tolerance "
          f"({time.monotonic() - start:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
