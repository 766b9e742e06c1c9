"""The attention variants the GPU run checks and times (bench/gpu/run.sh), with their float64
meaning. Shared by the numerics, the speed run and the device kit's kernel-cache fill
(scripts/device-kit.sh), so the cache the kit carries holds exactly what the run asks for.

A variant is (name, head_dim, causal, dtype). `op_variant(name, dim)` is the string the torch op
takes; `reference_args(name)` the normalizer and score_mod of test/python/reference.py's
attention_general that mean the same. The variants with captured tensors (CAPTURES: regions that
read tensors the call passes) also have `capture_signature(name)` (what the kernels specialize
on), `capture_inputs(...)` (the tensors a call passes) and `capture_reference(name, captures)`.
"""
import math

# Normalizers by name, and three written as IR (the `mlir:` variant strings of the torch op):
# a user-written elementwise normalizer, ALiBi and logit soft-capping as score_mods.
NORMALIZERS = ("softmax", "sigmoid", "relu", "custom", "alibi", "softcap")
ROW_WISE = ("softmax", "alibi", "softcap")  # these have a log-sum-exp output
HEAD_DIMS = (64, 128)
DTYPES = ("bf16", "f16")
SOFTCAP = 5.0  # small enough that tanh bends the scores of random inputs

_TYPE = "tensor<1x8x128x{d}xf32>"

_CUSTOM_BODY = """  normalizer_body {{
  ^bb0(%s: f32):
    %half = arith.constant 0.5 : f32
    %one = arith.constant 1.0 : f32
    %decay = arith.constant -0.1 : f32
    %t = math.tanh %s : f32
    %t1 = arith.addf %t, %one : f32
    %sig = arith.mulf %t1, %half : f32
    %s2 = arith.mulf %s, %s : f32
    %e = arith.mulf %s2, %decay : f32
    %g = math.exp %e : f32
    %p = arith.mulf %sig, %g : f32
    attn.yield %p : f32
  }}"""

# s - %slope * (q - k): the end of both ALiBi score_mods (fixed slopes, and captured ones).
_ALIBI_PENALTY = """    %dist = arith.subi %qi, %ki : index
    %disti = arith.index_cast %dist : index to i32
    %distf = arith.sitofp %disti : i32 to f32
    %penalty = arith.mulf %slope, %distf : f32
    %r = arith.subf %s, %penalty : f32
    attn.yield %r : f32
  }}"""

# ALiBi with slope(h) = 2^-(h + 1) (frontend/examples/alibi.mlir's slopes for H = 8).
_ALIBI_BODY = """  score_mod {{
  ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index):
    %one = arith.constant 1 : index
    %minus_one = arith.constant -1.0 : f32
    %h1 = arith.addi %h, %one : index
    %h1i = arith.index_cast %h1 : index to i32
    %h1f = arith.sitofp %h1i : i32 to f32
    %exponent = arith.mulf %h1f, %minus_one : f32
    %slope = math.exp2 %exponent : f32
""" + _ALIBI_PENALTY

_SOFTCAP_BODY = """  score_mod {{
  ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index):
    %cap = arith.constant {cap:.1f} : f32
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %r = arith.mulf %t, %cap : f32
    attn.yield %r : f32
  }}"""


def _module(name, normalizer, body, dim):
    t = _TYPE.format(d=dim)
    return (f"mlir:func.func @{name}_d{dim}(%q: {t}, %k: {t}, %v: {t}) -> {t} {{\n"
            f"  %o = attn.attention %q, %k, %v normalizer({normalizer}) : {t}, {t}, {t} -> {t}\n"
            f"{body}\n  return %o : {t}\n}}")


def op_variant(name, dim):
    """The torch op's variant string (causal is the op's is_causal flag)."""
    if name in CAPTURES:
        return _capture_module(name, dim)
    if name in ("softmax", "sigmoid", "relu"):
        return name
    if name == "custom":
        return _module(name, "#attn.custom", _CUSTOM_BODY.format(), dim)
    if name == "alibi":
        return _module(name, "#attn.softmax", _ALIBI_BODY.format(), dim)
    if name == "softcap":
        return _module(name, "#attn.softmax", _SOFTCAP_BODY.format(cap=SOFTCAP), dim)
    raise ValueError(f"unknown variant {name}")


def reference_args(name):
    """(normalizer, score_mod) for reference.attention_general, in float64."""
    import torch

    if name == "sigmoid":  # the default bias −ln(Sk)
        return (lambda s, n: torch.sigmoid(s - math.log(max(n, 1)))), None
    if name == "relu":  # the default scale 1/Sk
        return (lambda s, n: torch.relu(s) / max(n, 1)), None
    if name == "custom":
        return (lambda s, n: 0.5 * (1 + torch.tanh(s)) * torch.exp(-0.1 * s * s)), None
    if name == "alibi":
        return "softmax", (lambda s, b, h, i, j: (s - torch.exp2(-(h + 1.0)) * (i - j), None))
    if name == "softcap":
        return "softmax", (lambda s, b, h, i, j: (SOFTCAP * torch.tanh(s / SOFTCAP), None))
    return "softmax", None


# ---- Captured tensors (frontend/examples/captures.mlir): learned ALiBi slopes [H], a relative-
# position bias table [H, 2 REACH + 1], document ids [B, S] read by a mask region.
CAPTURES = ("alibi_slopes", "relative_bias", "document_mask")
REACH = 1023  # the table covers distances up to REACH: sequences up to REACH + 1 tokens
_CAPTURE_TYPES = {"alibi_slopes": "tensor<?xf32>", "relative_bias": f"tensor<?x{2 * REACH + 1}xf32>",
                  "document_mask": "tensor<?x?xi32>"}
_CAPTURE_BODIES = {
    "alibi_slopes": """  score_mod {{
  ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index, %m: {t}):
    %slope = tensor.extract %m[%h] : {t}
""" + _ALIBI_PENALTY,
    "relative_bias": """  score_mod {{
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %table: {t}):
    %reach = arith.constant {reach} : index
    %d = arith.subi %i, %j : index
    %at = arith.addi %d, %reach : index
    %bias = tensor.extract %table[%h, %at] : {t}
    %r = arith.addf %s, %bias : f32
    attn.yield %r : f32
  }}""",
    "document_mask": """  mask {{
  ^bb0(%b: index, %h: index, %i: index, %j: index, %docs: {t}):
    %di = tensor.extract %docs[%b, %i] : {t}
    %dj = tensor.extract %docs[%b, %j] : {t}
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }}""",
}


def _capture_module(name, dim):
    t = f"tensor<?x?x?x{dim}xf32>"
    c = _CAPTURE_TYPES[name]
    body = _CAPTURE_BODIES[name].format(t=c, reach=REACH)
    return (f"mlir:func.func @{name}_d{dim}(%q: {t}, %k: {t}, %v: {t}, %c: {c}) -> {t} {{\n"
            f"  %o = attn.attention %q, %k, %v captures(%c : {c}) normalizer(#attn.softmax)\n"
            f"      : {t}, {t}, {t} -> {t}\n{body}\n  return %o : {t}\n}}")


def capture_signature(name):
    """The kit's prepare() argument: one "<f|i><rank>" per capture ([] for other variants)."""
    return {"alibi_slopes": ["f1"], "relative_bias": ["f2"], "document_mask": ["i2"]}.get(name, [])


def capture_inputs(name, batch, heads, queries, keys, torch, generator):
    """The CPU tensors a call of capture variant `name` passes (random, never zeros)."""
    if name == "alibi_slopes":
        return [torch.rand(heads, generator=generator) * 0.5 + 0.01]
    if name == "relative_bias":
        return [torch.randn(heads, 2 * REACH + 1, generator=generator)]
    # Documents of random lengths (1 to 97 tokens) over max(Sq, Sk) positions.
    length = max(queries, keys)
    rows = []
    for _ in range(batch):
        cuts = torch.randint(1, 98, (length,), generator=generator).cumsum(0)
        rows.append(torch.searchsorted(cuts, torch.arange(length), right=True).to(torch.int32))
    return [torch.stack(rows)]


def capture_reference(name, captures):
    """(normalizer, score_mod) for reference.attention_general, in float64."""
    c = captures[0].cpu()
    if name == "alibi_slopes":
        slopes = c.double()
        return "softmax", (lambda s, b, h, i, j: (s - slopes[h] * (i - j), None))
    if name == "relative_bias":
        table = c.double()
        return "softmax", (lambda s, b, h, i, j: (s + table[h, i - j + REACH], None))
    docs = c.long()
    return "softmax", (lambda s, b, h, i, j: (s, docs[b, i] == docs[b, j]))


def captures_matrix(quick=False):
    """Every (name, dim, causal, dtype) of the capture numerics: 6, or 3 with quick."""
    for index, name in enumerate(CAPTURES):
        cases = [(64, "bf16")] if quick else [(64, "bf16"), (128, "f16")]
        for dim, dtype in cases:
            yield name, dim, index % 2 == 0, dtype


def numerics_matrix(quick=False):
    """Every (name, dim, causal, dtype) the numerics check: 48, or 12 with quick."""
    for name in NORMALIZERS:
        for causal in (False, True):
            for dim in ((64,) if quick else HEAD_DIMS):
                for dtype in (("bf16",) if quick else DTYPES):
                    yield name, dim, causal, dtype


def speed_matrix():
    """Every (name, dim, causal, dtype) the speed run times: ours for softmax and sigmoid."""
    for name in ("softmax", "sigmoid"):
        for dim in HEAD_DIMS:
            for causal in (False, True):
                yield name, dim, causal, "bf16"


def cache_variants():
    """What the kit's kernel cache holds: the numerics' (captures too) and the speed run's variants (the
    ViT-B/16 step uses softmax and sigmoid at D = 64, bf16, not causal: among them)."""
    seen = []
    for case in list(numerics_matrix()) + list(captures_matrix()) + list(speed_matrix()):
        if case not in seen:
            seen.append(case)
    return seen
