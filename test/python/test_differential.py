"""Randomized differential test of attn::attention against float64 torch math
(test/python/random_cases.py builds the cases, reference.attention_general is the oracle).

Every case is a pure function of (seed, index): the variant (built-in names and `mlir:` IR with
custom normalizers, score_mods, masks written as score_mods returning -inf, causal/window/scale
attributes, static or dynamic sizes in the types), shapes (0, 1, odd, Sq != Sk, GQA/MQA), head
dims, dtype, the inputs' and the upstream gradient's strides. Forward and dq, dk, dv are compared
norm-wise (float32/float64 < 1e-4, bfloat16/float16 < 2e-2); a NaN or inf anywhere fails.

    ATTN_DIFF_CASES=N      number of cases (default random_cases.DEFAULT_CASES)
    ATTN_DIFF_SEED=S       seed (default random_cases.DEFAULT_SEED)
    ATTN_DIFF_INDEX=I      first case index (with ATTN_DIFF_CASES=1: just case I)
    ATTN_DIFF_VARIANTS=P   variant pool size per seed (default 128)

A failure prints the case, its variant text and the commands that rerun just it. The long run
("fuzz") is bench/fuzz/run_differential.py.
"""
import os

import pytest
import torch

import attn
import random_cases as rc

# The bf16-products runs force an instruction set; a host without it skips them.
_PRODUCTS_FLAG = {"amx": "amx_bf16", "avx512": "avx512_bf16"}.get(
    os.environ.get("ATTN_CPU_BF16_PRODUCTS", ""))
if _PRODUCTS_FLAG:
    with open("/proc/cpuinfo") as cpuinfo:
        if _PRODUCTS_FLAG not in cpuinfo.read().split():
            pytest.skip(f"this CPU has no {_PRODUCTS_FLAG}", allow_module_level=True)

SEED = int(os.environ.get("ATTN_DIFF_SEED", rc.DEFAULT_SEED))
CASES = int(os.environ.get("ATTN_DIFF_CASES", rc.DEFAULT_CASES))
START = int(os.environ.get("ATTN_DIFF_INDEX", 0))
INDICES = range(START, START + CASES)


@pytest.mark.parametrize("index", INDICES, ids=lambda index: f"seed{SEED}-case{index}")
def test_random_case_matches_float64(index):
    rc.check(rc.make_case(SEED, index))


def test_case_generation_is_reproducible():
    for index in (0, 7, 123):
        a, b = rc.make_case(SEED, index), rc.make_case(SEED, index)
        assert a == b and a.variant.text() == b.variant.text()
        for x, y in zip(rc.make_inputs(a), rc.make_inputs(b)):
            assert torch.equal(x, y) and x.stride() == y.stride()


@pytest.mark.skipif(CASES < rc.DEFAULT_CASES, reason="a partial run covers less")
def test_the_cases_cover_the_regime():
    """The generated set exercises every family it claims to (so a change to the generator
    cannot silently narrow the test)."""
    cases = [rc.make_case(SEED, index) for index in INDICES]
    seen = set()
    for case in cases:
        v = case.variant
        seen.add(("dtype", case.dtype))
        seen.add(("spelling", v.spelling))
        seen.add(("normalizer", v.normalizer[0] if v.normalizer[0] != "custom"
                  else v.normalizer[1]))
        seen.update(("mod", m[0]) for m in v.mods)
        seen.update(("mask", m[0]) for m in v.masks)
        seen.update(("layout", layout) for layout in case.layouts)
        seen.add(("grad_layout", case.grad_layout))
        seen.add(("head_dim", v.head_dim))
        if v.static:
            seen.add(("static",))
        if v.window is not None:
            seen.add(("window",))
        if v.ir_causal or v.op_causal:
            seen.add(("causal",))
        if v.op_scale is not None or v.ir_scale is not None:
            seen.add(("scale",))
        if v.head_dim != v.value_head_dim:
            seen.add(("dv != d",))
        if case.queries != case.keys:
            seen.add(("sq != sk",))
        if case.q_heads != case.kv_heads:
            seen.add(("gqa",))
        if case.kv_heads == 1 and case.q_heads > 1:
            seen.add(("mqa",))
        for length in (case.queries, case.keys):
            if length in (0, 1) or length % 2:
                seen.add(("length", 0 if length == 0 else 1 if length == 1 else "odd"))
            if length > rc.KEY_BLOCK:
                seen.add(("length", "> one key block"))
    dtypes = [rc.FORCED_DTYPE] if rc.FORCED_DTYPE else rc.DTYPES
    wanted = {("dtype", d) for d in dtypes} | {("spelling", "builtin"), ("spelling", "mlir")}
    wanted |= {("normalizer", n) for n in ("softmax", "sigmoid", "relu")}
    wanted |= {("normalizer", n) for n in rc.CUSTOM_NORMALIZERS}
    wanted |= {("mod", m[0]) for m in rc.MOD_CHOICES} | {("mask", m[0]) for m in rc.MASK_CHOICES}
    wanted |= {("layout", layout) for layout in rc.LAYOUTS}
    wanted |= {("grad_layout", layout) for layout in rc.GRAD_LAYOUTS}
    wanted |= {("head_dim", d) for d in (1, 7, 8, 16, 24, 32, 64)}
    wanted |= {("static",), ("window",), ("causal",), ("scale",), ("dv != d",), ("sq != sk",),
               ("gqa",), ("mqa",), ("length", 0), ("length", 1), ("length", "odd"),
               ("length", "> one key block")}
    assert not wanted - seen, f"not covered: {sorted(wanted - seen, key=str)}"


# ---- what the op cannot serve is a clear error (DESIGN.md invariant 5) -----------------------

def _ir(head_dim=16, operands="", arguments="", attributes="", regions=""):
    t = f"tensor<?x?x?x{head_dim}xf32>"
    return (f"mlir:func.func @f(%q: {t}, %k: {t}, %v: {t}{arguments}) -> {t} {{\n"
            f"  %o = attn.attention %q, %k, %v {operands} normalizer(#attn.softmax) {attributes}"
            f"\n      : {t}, {t}, {t} -> {t}\n{regions}\n  return %o : {t}\n}}\n")


FLOOR_SCORE_MOD = """  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %r = math.floor %s : f32
    attn.yield %r : f32
  }"""


@pytest.mark.parametrize("variant,message", [
    (_ir(head_dim=32), r"IR has head dims D = 32, Dv = 32 but the inputs have D = 16"),
    (_ir(regions=FLOOR_SCORE_MOD), r"cannot differentiate 'math.floor'"),
    (_ir(operands="bias(%bias : tensor<1x1x?x?xf32>)",
         arguments=", %bias: tensor<1x1x?x?xf32>"),
     r"reads 1 captured tensor \(tensor<1x1x\?x\?xf32>\) but the call passes 0"),
    (_ir(operands="kv_lengths(%n : tensor<?xi32>)", arguments=", %n: tensor<?xi32>"),
     r"variant IR takes kv_lengths: pass the key lengths to the call"),
    (_ir(attributes="{window = -3}"), r"window must be >= 0, got -3"),
    ("mlir:func.func @f(", r"does not parse"),
    ("mlir:func.func @f() { return }", r"holds no attn.attention"),
    ("relu(bias=1.0)", r"(?s)relu.*'bias'.*scale"),
])
def test_variants_the_compiler_cannot_serve_are_clear_errors(variant, message):
    q = torch.randn(1, 2, 5, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match=message):
        attn.attention(q, q, q, variant)


@pytest.mark.parametrize("shapes,message", [
    (((1, 2, 4, 0), (1, 2, 4, 0), (1, 2, 4, 8)), "head dims must be non-empty"),
    (((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 0)), "head dims must be non-empty"),
    (((1, 2, 4, 8), (1, 0, 4, 8), (1, 0, 4, 8)), "multiple of the key/value heads"),
    (((2, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), "one batch size"),
])
def test_unsupported_shapes_are_clear_errors(shapes, message):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(RuntimeError, match=message):
        attn.attention(q, k, v)


def test_unsupported_dtypes_are_clear_errors():
    q = torch.randn(1, 1, 4, 8)
    for dtype in (torch.int32, torch.complex64, torch.bool):
        with pytest.raises(RuntimeError, match="expected float32, bfloat16, float16 or float64"):
            attn.attention(q.to(dtype), q.to(dtype), q.to(dtype))
