"""Random cases for the differential test of attn::attention (test_differential.py and
bench/fuzz/run_differential.py).

A case is a pure function of (seed, index): the variant (a built-in name or `mlir:` IR with a
normalizer, score_mods, masks written as score_mods that return -inf, `causal`/`window`/`scale`
attributes, types with static or dynamic sizes), the shapes, dtype, strides of every input and of
the upstream gradient, and the values. `check(case)` runs the op forward and backward and compares
the output and dq, dk, dv with reference.attention_general in float64; any NaN/inf is a failure.

Variants come from a pool of VARIANT_POOL entries per seed (case i draws one), so a run compiles
a bounded set of kernels; pass another pool size with ATTN_DIFF_VARIANTS.

Rerun one case:
    ATTN_DIFF_CASES=1 ATTN_DIFF_SEED=S ATTN_DIFF_INDEX=I pytest test/python/test_differential.py
or: python -c "import random_cases as rc; rc.check(rc.make_case(S, I))"  (PYTHONPATH=test/python)
"""
import dataclasses
import hashlib
import json
import math
import os
import random
from typing import List, Optional, Tuple

import torch

import reference

DEFAULT_SEED = 1301
DEFAULT_CASES = 800
VARIANT_POOL = int(os.environ.get("ATTN_DIFF_VARIANTS", "128"))
KEY_BLOCK = 64  # the CPU kernels' key block (README: "key/value blocks of 64 keys")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
# Norm-wise relative error bounds; float64 inputs are computed in float32 by the kernels.
TOLERANCE = {"float32": 1e-4, "float64": 1e-4, "bfloat16": 2e-2, "float16": 2e-2}

# ATTN_DIFF_DTYPE=bfloat16 makes every case bfloat16 (the bf16-products runs).
FORCED_DTYPE = os.environ.get("ATTN_DIFF_DTYPE") or None
if FORCED_DTYPE is not None and FORCED_DTYPE not in DTYPES:
    raise ValueError(f"ATTN_DIFF_DTYPE must be one of {sorted(DTYPES)}, got {FORCED_DTYPE!r}")

MINUS_INF = "0xFF800000"


def _flt(x: float) -> str:
    """An MLIR float literal (always with a decimal point or exponent)."""
    return f"{x:.9e}"


# --------------------------------------------------------------------------------------------
# Scalar IR bodies: a tiny SSA emitter shared by normalizer bodies and score_mods.

class _Body:
    def __init__(self):
        self.lines: List[str] = []
        self.count = 0

    def op(self, text: str, type_: str) -> str:
        name = f"%t{self.count}"
        self.count += 1
        self.lines.append(f"    {name} = {text} : {type_}")
        return name

    def f(self, x: float) -> str:
        return self.op(f"arith.constant {_flt(x)}", "f32")

    def i(self, n: int) -> str:
        return self.op(f"arith.constant {n}", "index")

    def to_f32(self, index: str) -> str:
        wide = self.op(f"arith.index_cast {index}", "index to i64")
        return self.op(f"arith.sitofp {wide}", "i64 to f32")

    def cmp(self, predicate: str, a: str, b: str) -> str:
        return self.op(f"arith.cmpi {predicate}, {a}, {b}", "index")


# --------------------------------------------------------------------------------------------
# Normalizers: (IR attribute or custom body, float64 torch function p = f(s, keys)).

def _keys(n, s):
    """The run-time key length(s) n (an int, or per-batch lengths [B, 1, 1, 1]), at least 1."""
    return torch.as_tensor(n, dtype=s.dtype).clamp(min=1)


def _sigmoid(bias):
    return lambda s, n: torch.sigmoid(s + (-torch.log(_keys(n, s)) if bias is None else bias))


def _relu(scale):
    return lambda s, n: torch.relu(s) * ((1.0 / _keys(n, s)) if scale is None else scale)


# name -> (body emitter(body, s) -> p, torch f(s)); each is differentiable by the compiler.
def _custom_half_tanh(b, s):
    half = b.f(0.5)
    t = b.op(f"math.tanh {s}", "f32")
    h = b.op(f"arith.mulf {t}, {half}", "f32")
    return b.op(f"arith.addf {h}, {half}", "f32")


def _custom_attenuated(b, s):  # frontend/examples/custom.mlir
    half, one, decay = b.f(0.5), b.f(1.0), b.f(-0.1)
    t = b.op(f"math.tanh {s}", "f32")
    t1 = b.op(f"arith.addf {t}, {one}", "f32")
    sig = b.op(f"arith.mulf {t1}, {half}", "f32")
    s2 = b.op(f"arith.mulf {s}, {s}", "f32")
    e = b.op(f"arith.mulf {s2}, {decay}", "f32")
    g = b.op(f"math.exp {e}", "f32")
    return b.op(f"arith.mulf {sig}, {g}", "f32")


def _custom_softplus(b, s):  # written stably: max(s, 0) + log1p(exp(-|s|))
    m = b.op(f"arith.maximumf {s}, {b.f(0.0)}", "f32")
    a = b.op(f"math.absf {s}", "f32")
    n = b.op(f"arith.negf {a}", "f32")
    e = b.op(f"math.exp {n}", "f32")
    l = b.op(f"math.log1p {e}", "f32")
    return b.op(f"arith.addf {m}, {l}", "f32")


def _custom_sigmoid_spelled(b, s, bias=-2.5):  # canonicalizes to #attn.sigmoid<bias = -2.5>
    c, one = b.f(bias), b.f(1.0)
    x = b.op(f"arith.addf {s}, {c}", "f32")
    n = b.op(f"arith.negf {x}", "f32")
    e = b.op(f"math.exp {n}", "f32")
    d = b.op(f"arith.addf {one}, {e}", "f32")
    return b.op(f"arith.divf {one}, {d}", "f32")


def _custom_relu_spelled(b, s, scale=0.125):  # canonicalizes to #attn.relu<scale = 0.125>
    zero, c = b.f(0.0), b.f(scale)
    m = b.op(f"arith.maximumf {s}, {zero}", "f32")
    return b.op(f"arith.mulf {m}, {c}", "f32")


def _custom_relu_squared(b, s):
    zero, c = b.f(0.0), b.f(0.1)
    m = b.op(f"arith.maximumf {s}, {zero}", "f32")
    m2 = b.op(f"arith.mulf {m}, {m}", "f32")
    return b.op(f"arith.mulf {m2}, {c}", "f32")


def _custom_erf_gate(b, s):
    half, one = b.f(0.5), b.f(1.0)
    e = b.op(f"math.erf {s}", "f32")
    e1 = b.op(f"arith.addf {e}, {one}", "f32")
    return b.op(f"arith.mulf {e1}, {half}", "f32")


def _custom_exp_shift(b, s):  # exp(min(s, 4) - 3): unnormalized, bounded by e
    m = b.op(f"arith.minimumf {s}, {b.f(4.0)}", "f32")
    x = b.op(f"arith.addf {m}, {b.f(-3.0)}", "f32")
    return b.op(f"math.exp {x}", "f32")


def _custom_shifted_tanh(b, s):  # f(-inf) = 0.1: masked entries must still give p = 0
    half, c = b.f(0.5), b.f(0.6)
    t = b.op(f"math.tanh {s}", "f32")
    h = b.op(f"arith.mulf {t}, {half}", "f32")
    return b.op(f"arith.addf {h}, {c}", "f32")


def _custom_silu(b, s):  # s·sigmoid(s): f(-inf) evaluates to -inf·0 = NaN unless masked first
    one = b.f(1.0)
    n = b.op(f"arith.negf {s}", "f32")
    e = b.op(f"math.exp {n}", "f32")
    d = b.op(f"arith.addf {one}, {e}", "f32")
    return b.op(f"arith.divf {s}, {d}", "f32")


CUSTOM_NORMALIZERS = {
    "half_tanh": (_custom_half_tanh, lambda s: 0.5 * (1 + torch.tanh(s))),
    "attenuated": (_custom_attenuated,
                   lambda s: 0.5 * (1 + torch.tanh(s)) * torch.exp(-0.1 * s * s)),
    "softplus": (_custom_softplus,
                 lambda s: s.clamp(min=0) + torch.log1p(torch.exp(-s.abs()))),
    "sigmoid_spelled": (_custom_sigmoid_spelled, lambda s: torch.sigmoid(s - 2.5)),
    "relu_spelled": (_custom_relu_spelled, lambda s: torch.relu(s) * 0.125),
    "relu_squared": (_custom_relu_squared, lambda s: 0.1 * torch.relu(s) ** 2),
    "erf_gate": (_custom_erf_gate, lambda s: 0.5 * (1 + torch.erf(s))),
    "exp_shift": (_custom_exp_shift, lambda s: torch.exp(s.clamp(max=4.0) - 3.0)),
    "shifted_tanh": (_custom_shifted_tanh, lambda s: 0.5 * torch.tanh(s) + 0.6),
    "silu": (_custom_silu, lambda s: s * torch.sigmoid(s)),
}


# --------------------------------------------------------------------------------------------
# score_mod pieces. A modifier maps the score; a mask keeps (b, h, i, j) or sends it to -inf.

def _mod_ir(b: _Body, mod, s, args):
    kind = mod[0]
    bb, h, i, j = args
    if kind == "softcap":
        cap = b.f(mod[1])
        x = b.op(f"arith.divf {s}, {cap}", "f32")
        t = b.op(f"math.tanh {x}", "f32")
        return b.op(f"arith.mulf {t}, {cap}", "f32")
    if kind == "alibi":  # slope(h) = 2^(-8 (h + 1) / H), H = mod[1]; distance i - j or |i - j|
        one = b.i(1)
        h1 = b.op(f"arith.addi {h}, {one}", "index")
        exponent = b.op(f"arith.mulf {b.to_f32(h1)}, {b.f(-8.0 / mod[1])}", "f32")
        slope = b.op(f"math.exp2 {exponent}", "f32")
        distance = b.to_f32(b.op(f"arith.subi {i}, {j}", "index"))
        if mod[2] == "abs":
            distance = b.op(f"math.absf {distance}", "f32")
        penalty = b.op(f"arith.mulf {slope}, {distance}", "f32")
        return b.op(f"arith.subf {s}, {penalty}", "f32")
    if kind == "positional":  # s + 0.1 b - 0.05 h + 0.01 (j mod 7)
        seven = b.i(7)
        jm = b.op(f"arith.remsi {j}, {seven}", "index")
        x = b.op(f"arith.mulf {b.to_f32(bb)}, {b.f(0.1)}", "f32")
        y = b.op(f"arith.mulf {b.to_f32(h)}, {b.f(-0.05)}", "f32")
        z = b.op(f"arith.mulf {b.to_f32(jm)}, {b.f(0.01)}", "f32")
        s = b.op(f"arith.addf {s}, {x}", "f32")
        s = b.op(f"arith.addf {s}, {y}", "f32")
        return b.op(f"arith.addf {s}, {z}", "f32")
    if kind == "times":  # a positive constant folds into the scale
        return b.op(f"arith.mulf {s}, {b.f(mod[1])}", "f32")
    if kind == "clip":
        lo = b.op(f"arith.maximumf {s}, {b.f(-mod[1])}", "f32")
        return b.op(f"arith.minimumf {lo}, {b.f(mod[1])}", "f32")
    if kind == "identity":
        return s
    raise ValueError(mod)


def _mod_torch(mod, s, bb, h, i, j):
    kind = mod[0]
    if kind == "softcap":
        return mod[1] * torch.tanh(s / mod[1])
    if kind == "alibi":
        slope = torch.exp2(-8.0 / mod[1] * (h + 1).to(s.dtype))
        distance = (i - j).to(s.dtype)
        if mod[2] == "abs":
            distance = distance.abs()
        return s - slope * distance
    if kind == "positional":
        return s + 0.1 * bb.to(s.dtype) - 0.05 * h.to(s.dtype) + 0.01 * (j % 7).to(s.dtype)
    if kind == "times":
        return s * mod[1]
    if kind == "clip":
        return s.clamp(-mod[1], mod[1])
    if kind == "identity":
        return s
    raise ValueError(mod)


def _mask_ir(b: _Body, mask, args) -> str:
    kind = mask[0]
    bb, h, i, j = args
    if kind == "sliding":  # i - W <= j <= i
        lo = b.op(f"arith.subi {i}, {b.i(mask[1])}", "index")
        return b.op(f"arith.andi {b.cmp('sge', j, lo)}, {b.cmp('sle', j, i)}", "i1")
    if kind == "symmetric":  # |i - j| <= W
        d = b.op(f"arith.subi {i}, {j}", "index")
        return b.op(f"arith.andi {b.cmp('sle', d, b.i(mask[1]))}, "
                    f"{b.cmp('sge', d, b.i(-mask[1]))}", "i1")
    if kind == "prefix_lm":  # j < P or j <= i
        return b.op(f"arith.ori {b.cmp('slt', j, b.i(mask[1]))}, {b.cmp('sle', j, i)}", "i1")
    if kind == "document":  # documents of L tokens: i / L == j / L
        length = b.i(mask[1])
        di = b.op(f"arith.divsi {i}, {length}", "index")
        dj = b.op(f"arith.divsi {j}, {length}", "index")
        return b.cmp("eq", di, dj)
    if kind == "inverse_causal":  # j >= i
        return b.cmp("sge", j, i)
    if kind == "rows_from":  # rows i < R see nothing
        return b.cmp("sge", i, b.i(mask[1]))
    if kind == "keys_from":  # keys j < K masked: with K >= 64 the first key block is empty
        return b.cmp("sge", j, b.i(mask[1]))
    if kind == "head_causal":  # odd heads see everything, even heads are causal
        odd = b.cmp("eq", b.op(f"arith.remsi {h}, {b.i(2)}", "index"), b.i(1))
        return b.op(f"arith.ori {odd}, {b.cmp('sle', j, i)}", "i1")
    if kind == "batch_keys":  # key padding through the batch index: j < L + 13 b
        limit = b.op(f"arith.addi {b.op(f'arith.muli {bb}, {b.i(13)}', 'index')}, "
                     f"{b.i(mask[1])}", "index")
        return b.cmp("slt", j, limit)
    if kind == "dilated":  # even keys only
        return b.cmp("eq", b.op(f"arith.remsi {j}, {b.i(2)}", "index"), b.i(0))
    if kind == "nothing":  # every entry masked
        name = f"%t{b.count}"
        b.count += 1
        b.lines.append(f"    {name} = arith.constant false")
        return name
    raise ValueError(mask)


def _mask_torch(mask, bb, h, i, j):
    kind = mask[0]
    if kind == "sliding":
        return (j >= i - mask[1]) & (j <= i)
    if kind == "symmetric":
        return (i - j).abs() <= mask[1]
    if kind == "prefix_lm":
        return (j < mask[1]) | (j <= i)
    if kind == "document":
        return torch.div(i, mask[1], rounding_mode="floor") == torch.div(j, mask[1],
                                                                         rounding_mode="floor")
    if kind == "inverse_causal":
        return j >= i
    if kind == "rows_from":
        return (i >= mask[1]) & (j >= 0)
    if kind == "keys_from":
        return (j >= mask[1]) & (i >= 0)
    if kind == "head_causal":
        return (h % 2 == 1) | (j <= i)
    if kind == "batch_keys":
        return j < mask[1] + 13 * bb
    if kind == "dilated":
        return (j % 2 == 0) & (i >= 0)
    if kind == "nothing":
        return torch.zeros((1, 1, 1, 1), dtype=torch.bool)
    raise ValueError(mask)


MOD_CHOICES = [("softcap", 2.0), ("softcap", 20.0), ("alibi", 8, "abs"), ("alibi", 4, "signed"),
               ("positional",), ("times", 1.7), ("times", -0.5), ("clip", 1.5), ("identity",)]
MASK_CHOICES = [("sliding", 3), ("sliding", 16), ("sliding", 40), ("symmetric", 5),
                ("symmetric", 33), ("prefix_lm", 5), ("prefix_lm", 70), ("document", 7),
                ("document", 30), ("document", 64), ("inverse_causal",), ("rows_from", 3),
                ("rows_from", 40), ("keys_from", 64), ("keys_from", 70), ("keys_from", 128),
                ("keys_from", 5), ("head_causal",), ("batch_keys", 20), ("dilated",),
                ("nothing",)]


# --------------------------------------------------------------------------------------------
# Variants

@dataclasses.dataclass
class Variant:
    normalizer: tuple  # ("softmax",) ("sigmoid", bias|None) ("relu", scale|None) ("custom", name)
    head_dim: int
    value_head_dim: int
    spelling: str = "builtin"  # "builtin" (a name) or "mlir"
    mods: tuple = ()
    masks: tuple = ()
    ir_causal: bool = False
    window: Optional[int] = None
    ir_scale: Optional[float] = None
    static: Optional[dict] = None  # sizes written in the IR types: b, hq, hkv, sq, sk (None = ?)
    element: str = "f32"
    op_causal: bool = False  # is_causal of the call
    op_scale: Optional[float] = None  # scale of the call
    mask_region: bool = False  # the masks as a `mask` region rather than a -inf score_mod

    def text(self) -> str:
        if self.spelling == "builtin":
            kind = self.normalizer[0]
            if len(self.normalizer) > 1 and self.normalizer[1] is not None:
                return f"{kind}({'bias' if kind == 'sigmoid' else 'scale'}={self.normalizer[1]})"
            return kind
        return "mlir:" + self.ir()

    def ir(self) -> str:
        static = self.static or {}

        def size(name):
            value = static.get(name)
            return "?" if value is None else str(value)

        el = self.element
        qt = f"tensor<{size('b')}x{size('hq')}x{size('sq')}x{self.head_dim}x{el}>"
        kt = f"tensor<{size('b')}x{size('hkv')}x{size('sk')}x{self.head_dim}x{el}>"
        vt = f"tensor<{size('b')}x{size('hkv')}x{size('sk')}x{self.value_head_dim}x{el}>"
        ot = f"tensor<{size('b')}x{size('hq')}x{size('sq')}x{self.value_head_dim}x{el}>"
        kind = self.normalizer[0]
        if kind == "custom":
            attribute = "#attn.custom"
        elif len(self.normalizer) > 1 and self.normalizer[1] is not None:
            attribute = (f"#attn.{kind}<{'bias' if kind == 'sigmoid' else 'scale'} = "
                         f"{_flt(self.normalizer[1])}>")
        else:
            attribute = f"#attn.{kind}"
        attributes = []
        if self.ir_causal:
            attributes.append("causal")
        if self.ir_scale is not None:
            attributes.append(f"scale = {_flt(self.ir_scale)} : f32")
        if self.window is not None:
            attributes.append(f"window = {self.window}")
        attr_text = (" {" + ", ".join(attributes) + "}") if attributes else ""
        lines = [f"func.func @variant(%q: {qt}, %k: {kt}, %v: {vt}) -> {ot} {{",
                 f"  %o = attn.attention %q, %k, %v normalizer({attribute}){attr_text}",
                 f"      : {qt}, {kt}, {vt} -> {ot}"]
        if kind == "custom":
            body = _Body()
            p = CUSTOM_NORMALIZERS[self.normalizer[1]][0](body, "%s")
            lines += ["  normalizer_body {", "  ^bb0(%s: f32):", *body.lines,
                      f"    attn.yield {p} : f32", "  }"]
        args = ("%b", "%h", "%i", "%j")
        if self.mods or (self.masks and not self.mask_region):
            body = _Body()
            s = "%s"
            for mod in self.mods:
                s = _mod_ir(body, mod, s, args)
            if self.masks and not self.mask_region:
                keep = None
                for mask in self.masks:
                    this = _mask_ir(body, mask, args)
                    keep = this if keep is None else body.op(f"arith.andi {keep}, {this}", "i1")
                minus_inf = body.op(f"arith.constant {MINUS_INF}", "f32")
                s = body.op(f"arith.select {keep}, {s}, {minus_inf}", "f32")
            lines += ["  score_mod {",
                      "  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):",
                      *body.lines, f"    attn.yield {s} : f32", "  }"]
        if self.masks and self.mask_region:
            body = _Body()
            keep = None
            for mask in self.masks:
                this = _mask_ir(body, mask, args)
                keep = this if keep is None else body.op(f"arith.andi {keep}, {this}", "i1")
            lines += ["  mask {", "  ^bb0(%b: index, %h: index, %i: index, %j: index):",
                      *body.lines, f"    attn.yield {keep} : i1", "  }"]
        lines += [f"  return %o : {ot}", "}"]
        return "\n".join(lines) + "\n"

    # ---- the meaning, for the reference

    def reference_normalizer(self):
        kind = self.normalizer[0]
        if kind == "softmax":
            return "softmax"
        if kind == "sigmoid":
            return _sigmoid(self.normalizer[1])
        if kind == "relu":
            return _relu(self.normalizer[1])
        f = CUSTOM_NORMALIZERS[self.normalizer[1]][1]
        return lambda s, n: f(s)

    def causal(self) -> bool:
        return self.op_causal or self.ir_causal

    def scale(self) -> Optional[float]:
        return self.op_scale if self.op_scale is not None else self.ir_scale

    def score_mod(self):
        if not (self.mods or self.masks):
            return None

        def apply(s, bb, h, i, j):
            for mod in self.mods:
                s = _mod_torch(mod, s, bb, h, i, j)
            keep = None
            for mask in self.masks:
                this = _mask_torch(mask, bb, h, i, j)
                keep = this if keep is None else keep & this
            return s, keep
        return apply

    def masks_only(self):
        """The score_mod's masks without its modifiers (for tagging cases)."""
        return dataclasses.replace(self, mods=()).score_mod() if self.masks else None


def make_variant(seed: int, pool_index: int) -> Variant:
    """Pool entry `pool_index` of `seed` (independent of how many cases run)."""
    rng = random.Random(f"attn-diff-variant:{seed}:{pool_index}")
    head_dim = rng.choice([16, 16, 32, 32, 8, 64, 24, 24, 1, 7])
    value_head_dim = head_dim if rng.random() < 0.75 else rng.choice([8, 16, 24, 32, 5])
    op_causal = rng.random() < 0.3
    op_scale = rng.choice([0.3, 0.125, 1.0]) if rng.random() < 0.2 else None
    if rng.random() < 0.25:
        normalizer = rng.choice([("softmax",), ("sigmoid", None), ("sigmoid", -3.5),
                                 ("sigmoid", 0.5), ("relu", None), ("relu", 0.25)])
        return Variant(normalizer, head_dim, value_head_dim, op_causal=op_causal,
                       op_scale=op_scale)
    roll = rng.random()
    if roll < 0.35:
        normalizer = ("softmax",)
    elif roll < 0.5:
        normalizer = ("sigmoid", rng.choice([None, None, -1.25]))
    elif roll < 0.6:
        normalizer = ("relu", rng.choice([None, 0.0625]))
    else:
        normalizer = ("custom", rng.choice(sorted(CUSTOM_NORMALIZERS)))
    mods = tuple(rng.sample(MOD_CHOICES, rng.choice([0, 0, 1, 1, 2])))
    masks = tuple(rng.sample(MASK_CHOICES, rng.choice([0, 1, 1, 1, 2])))
    window = rng.choice([0, 1, 5, 37, 64, 100]) if rng.random() < 0.25 else None
    static = None
    if rng.random() < 0.3:
        hq, hkv = rng.choice([(2, 2), (4, 2), (8, 8), (1, 1), (None, None), (None, 2)])
        static = {"b": rng.choice([1, 2, None]), "hq": hq, "hkv": hkv,
                  "sq": rng.choice([1, 64, 128, None]), "sk": rng.choice([1, 64, 96, None])}
    return Variant(normalizer, head_dim, value_head_dim, spelling="mlir", mods=mods, masks=masks,
                   ir_causal=rng.random() < 0.25, window=window,
                   ir_scale=rng.choice([0.2, 0.5]) if rng.random() < 0.15 else None,
                   static=static, element=rng.choice(["f32", "f32", "bf16", "f16"]),
                   op_causal=op_causal, op_scale=op_scale,
                   # From a generator of its own, so that the rest of every variant stays.
                   mask_region=random.Random(f"attn-diff-mask-region:{seed}:{pool_index}")
                   .random() < 0.5)


# --------------------------------------------------------------------------------------------
# Cases

LAYOUTS = ["contiguous", "transposed", "padded_last", "strided_last", "offset_seq",
           "expanded_batch", "expanded_heads", "permuted"]
GRAD_LAYOUTS = ["contiguous", "transposed", "expanded_seq", "ones"]


@dataclasses.dataclass
class Case:
    seed: int
    index: int
    pool_index: int
    variant: Variant
    batch: int
    q_heads: int
    kv_heads: int
    queries: int
    keys: int
    dtype: str
    magnitude: float
    layouts: Tuple[str, str, str]
    grad_layout: str
    check_inference: bool
    # Per-batch key lengths (the op's kv_lengths: a padded ragged batch), or None.
    kv_lengths: Optional[List[int]] = None

    def summary(self) -> dict:
        v = self.variant
        return {"seed": self.seed, "index": self.index, "pool": self.pool_index,
                "q": [self.batch, self.q_heads, self.queries, v.head_dim],
                "k": [self.batch, self.kv_heads, self.keys, v.head_dim],
                "v": [self.batch, self.kv_heads, self.keys, v.value_head_dim],
                "dtype": self.dtype, "is_causal": v.op_causal, "scale": v.op_scale,
                "normalizer": list(v.normalizer), "spelling": v.spelling,
                "mods": [list(m) for m in v.mods], "masks": [list(m) for m in v.masks],
                "ir_causal": v.ir_causal, "window": v.window, "ir_scale": v.ir_scale,
                "static": v.static, "mask_region": v.mask_region, "magnitude": self.magnitude,
                "layouts": list(self.layouts), "grad_layout": self.grad_layout,
                "kv_lengths": self.kv_lengths}


def _length(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.04:
        return 0
    if roll < 0.12:
        return 1
    if roll < 0.42:
        return rng.randrange(2, 21)
    if roll < 0.62:
        return rng.randrange(21, 64)
    if roll < 0.77:
        return rng.choice([63, 64, 65, 127, 128, 129])
    return rng.randrange(66, 200)


def make_case(seed: int = DEFAULT_SEED, index: int = 0, pool_size: int = None) -> Case:
    pool_size = pool_size or VARIANT_POOL
    rng = random.Random(f"attn-diff-case:{seed}:{index}")
    # The first pool_size cases take every pool entry once; later ones draw.
    pool_index = index if index < pool_size else rng.randrange(pool_size)
    variant = make_variant(seed, pool_index)
    batch = rng.choice([1, 1, 2, 3]) if rng.random() > 0.02 else 0
    kv_heads = rng.choice([1, 1, 2, 3])
    q_heads = kv_heads * rng.choice([1, 1, 2, 4])
    queries = _length(rng)
    keys = queries if rng.random() < 0.35 else _length(rng)
    # Keep each case small: the float64 reference is [B, Hq, Sq, Sk] per step.
    while batch * q_heads * queries * keys > 150_000:
        queries, keys = (queries + 1) // 2, (keys + 1) // 2
    dtype = rng.choices(list(DTYPES), weights=[45, 20, 20, 15])[0]
    dtype = FORCED_DTYPE or dtype  # drawn all the same: the rest of the case stays as it was
    magnitude = rng.choice([1.0, 1.0, 1.0, 2.5])
    if dtype == "float16":
        magnitude = 1.0  # float16's range (65504) is not what this test is about
    layouts = tuple(rng.choice(LAYOUTS) if rng.random() < 0.4 else "contiguous"
                    for _ in range(3))
    grad_layout = rng.choice(GRAD_LAYOUTS) if rng.random() < 0.4 else "contiguous"
    check_inference = rng.random() < 0.2
    # Drawn from a generator of its own, so that the rest of every case stays as it was.
    lengths_rng = random.Random(f"attn-diff-lengths:{seed}:{index}")
    kv_lengths = None
    if lengths_rng.random() < 0.25:
        kv_lengths = [lengths_rng.choice([0, min(1, keys), keys, lengths_rng.randint(0, keys)])
                      for _ in range(batch)]
    return Case(seed, index, pool_index, variant, batch, q_heads, kv_heads, queries, keys, dtype,
                magnitude=magnitude, layouts=layouts,
                grad_layout=grad_layout, check_inference=check_inference, kv_lengths=kv_lengths)


def _generator(case: Case) -> torch.Generator:
    digest = hashlib.sha256(f"attn-diff-values:{case.seed}:{case.index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _tensor(shape, dtype, layout, generator, magnitude):
    b, h, s, d = shape

    def randn(*sizes):
        return (torch.randn(sizes, generator=generator) * magnitude).to(dtype)

    if layout == "contiguous":
        return randn(b, h, s, d)
    if layout == "transposed":  # [B, S, H, D] storage, as a projection's output
        return randn(b, s, h, d).transpose(1, 2)
    if layout == "padded_last":  # rows of D + 5 elements, the last 5 unused
        return randn(b, h, s, d + 5)[..., :d]
    if layout == "strided_last":  # every other element: a last stride of 2
        return randn(b, h, s, 2 * d)[..., ::2]
    if layout == "offset_seq":  # a slice along the sequence: nonzero storage offset
        return randn(b, h, s + 3, d)[:, :, 2:2 + s]
    if layout == "expanded_batch":  # stride 0 over the batch
        return randn(1, h, s, d).expand(b, h, s, d)
    if layout == "expanded_heads":  # stride 0 over the heads
        return randn(b, 1, s, d).expand(b, h, s, d)
    if layout == "permuted":  # [S, D, B, H] storage: no dimension has stride 1 where expected
        return randn(s, d, b, h).permute(2, 3, 0, 1)
    raise ValueError(layout)


def _grad_tensor(shape, dtype, layout, generator):
    b, h, s, d = shape
    if layout == "contiguous":
        return torch.randn(shape, generator=generator).to(dtype)
    if layout == "transposed":
        return torch.randn(b, s, h, d, generator=generator).to(dtype).transpose(1, 2)
    if layout == "expanded_seq":
        return torch.randn(b, h, 1, d, generator=generator).to(dtype).expand(b, h, s, d)
    if layout == "ones":  # what out.sum().backward() sends
        return torch.ones((), dtype=dtype).expand(b, h, s, d)
    raise ValueError(layout)


def make_inputs(case: Case):
    """q, k, v (leaves with the case's strides, requiring grad) and the upstream gradient."""
    v_ = case.variant
    dtype = DTYPES[case.dtype]
    generator = _generator(case)
    shapes = [(case.batch, case.q_heads, case.queries, v_.head_dim),
              (case.batch, case.kv_heads, case.keys, v_.head_dim),
              (case.batch, case.kv_heads, case.keys, v_.value_head_dim)]
    tensors = [_tensor(shape, dtype, layout, generator, case.magnitude).detach().requires_grad_()
               for shape, layout in zip(shapes, case.layouts)]
    grad = _grad_tensor((case.batch, case.q_heads, case.queries, v_.value_head_dim), dtype,
                        case.grad_layout, generator)
    return (*tensors, grad)


def tags(case: Case) -> List[str]:
    """What a case exercises that is known to matter (the failure report groups by these)."""
    v = case.variant
    found = []
    if v.static:
        found.append("static-sizes-in-types")
    if case.queries and case.keys and case.batch and case.q_heads:
        shape_q = torch.empty(case.batch, case.q_heads, case.queries, 1)
        shape_k = torch.empty(case.batch, case.kv_heads, case.keys, 1)
        masks_only = v.masks_only()
        if masks_only is not None and v.normalizer[0] == "softmax":
            keep = reference.allowed_mask(shape_q, shape_k, score_mod=masks_only)
            if not keep[..., :KEY_BLOCK].any(-1).all():
                found.append("score_mod-mask-empties-first-key-block")
        allowed = reference.allowed_mask(shape_q, shape_k, v.causal(), v.window, v.score_mod())
        if not allowed.any(-1).all():
            found.append("fully-masked-rows")
        if (v.normalizer[0] == "custom" and v.normalizer[1] in ("shifted_tanh", "silu")
                and not allowed.all()):
            found.append(f"custom-{v.normalizer[1]}-with-masked-entries")
    if 0 in (case.batch, case.queries, case.keys):
        found.append("empty")
    if v.masks and v.mask_region:
        found.append("mask-region")
    if case.kv_lengths is not None:
        found.append("kv_lengths")
        if case.keys and 0 in case.kv_lengths:
            found.append("kv_lengths-zero")
    return found


def _lengths_literal(case: Case) -> str:
    return "None" if case.kv_lengths is None else f"torch.tensor({case.kv_lengths})"


def repro_lines(case: Case) -> str:
    env = f"ATTN_DIFF_CASES=1 ATTN_DIFF_SEED={case.seed} ATTN_DIFF_INDEX={case.index}"
    if VARIANT_POOL != 128:
        env += f" ATTN_DIFF_VARIANTS={VARIANT_POOL}"
    v = case.variant
    dtype = f"torch.{case.dtype}"
    standalone = (
        "import torch, attn; "
        f"q = torch.randn({case.batch}, {case.q_heads}, {case.queries}, {v.head_dim}, "
        f"dtype={dtype}, requires_grad=True); "
        f"k = torch.randn({case.batch}, {case.kv_heads}, {case.keys}, {v.head_dim}, "
        f"dtype={dtype}, requires_grad=True); "
        f"v = torch.randn({case.batch}, {case.kv_heads}, {case.keys}, {v.value_head_dim}, "
        f"dtype={dtype}, requires_grad=True); "
        f"o = attn.attention(q, k, v, {v.text()!r}, scale={v.op_scale!r}, "
        f"is_causal={v.op_causal!r}, kv_lengths={_lengths_literal(case)}); o.sum().backward(); "
        "print(o.isnan().any().item(), q.grad.isnan().any().item())")
    return (f"  rerun just this case:\n    {env} ctest --test-dir build -R python-differential "
            f"--output-on-failure\n"
            f"    {env} .venv/bin/python -m pytest -q test/python/test_differential.py\n"
            f"    .venv/bin/python bench/fuzz/run_differential.py --seed {case.seed} "
            f"--index {case.index} --cases 1 -v\n"
            f"    PYTHONPATH=frontend/python:test/python .venv/bin/python -c "
            f"'import random_cases as rc; rc.check(rc.make_case({case.seed}, {case.index}))'\n"
            f"  the same call on fresh random values (same shapes, dtype, variant):\n"
            f"    {standalone}")


def describe(case: Case, problems: List[str]) -> str:
    return ("\n".join([
        f"differential case seed={case.seed} index={case.index} failed:",
        *[f"  - {p}" for p in problems],
        f"  tags: {', '.join(tags(case)) or '-'}",
        f"  case: {json.dumps(case.summary())}",
        "  variant text:",
        *["    " + line for line in case.variant.text().splitlines()],
        repro_lines(case)]))


class CaseFailure(AssertionError):
    def __init__(self, case: Case, problems: List[str]):
        super().__init__(describe(case, problems))
        self.case = case
        self.problems = problems


def _finite(name, tensor, problems):
    if tensor.numel() and not torch.isfinite(tensor).all():
        bad = ~torch.isfinite(tensor)
        where = bad.nonzero()[0].tolist()
        kind = "NaN" if torch.isnan(tensor).any() else "inf"
        problems.append(f"{name}: {kind} in {int(bad.sum())} of {tensor.numel()} entries "
                        f"(first at {where})")
        return False
    return True


def _reference(case: Case, q, k, v, grad, dtype):
    """out, dq, dk, dv of the case's meaning, computed in `dtype` (detached)."""
    variant = case.variant
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = reference.attention_general(*leaves, variant.reference_normalizer(), variant.scale(),
                                      variant.causal(), variant.window, variant.score_mod(),
                                      dtype=dtype, kv_lengths=case.kv_lengths)
    grads = torch.autograd.grad(out, leaves, grad.to(dtype), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    return [t.detach().double() for t in (out, *grads)]


def _absolute_floors(case: Case, q, k, v, grad, out):
    """Absolute error allowed for out, dq, dk, dv whatever their norm.

    Every tensor: half an ulp of the dtype's subnormals per entry. dq and dk: the backward's
    delta_i = dO_i·O_i (row-wise normalizers) is computed from O as saved, rounded to the dtype
    (as FlashAttention does), so dq_i carries an error up to u·scale·|dO_i|·|O_i|·max|k_j|
    (u: the dtype's unit roundoff, 16·2^-24 for float32/float64): invisible next to a typical
    gradient, but all there is when the softmax is one-hot (one allowed key, or one dominating
    score), where the exact dq is (near) zero."""
    dtype = DTYPES[case.dtype]
    info = torch.finfo(dtype)
    unit = info.eps / 2 if dtype in (torch.bfloat16, torch.float16) else 16 * 2.0 ** -24
    variant = case.variant
    scale = variant.scale() or 1 / math.sqrt(max(variant.head_dim, 1))
    for mod in variant.mods:
        if mod[0] == "times":
            scale *= abs(mod[1])
    row = (grad.double().norm(dim=-1) * out.norm(dim=-1)).norm().item() if out.numel() else 0.0

    def largest_row(t):
        return t.detach().double().norm(dim=-1).max().item() if t.numel() else 0.0

    floors = []
    for t, extra in ((out, 0.0), (q, unit * scale * row * largest_row(k)),
                     (k, unit * scale * row * largest_row(q)), (v, 0.0)):
        floors.append(math.sqrt(t.numel()) * info.tiny * info.eps + extra)
    return floors


def _lengths_tensor(case: Case) -> Optional[torch.Tensor]:
    if case.kv_lengths is None:
        return None
    # int32 for odd cases: any integer dtype is accepted.
    dtype = torch.int32 if case.index % 2 else torch.int64
    return torch.tensor(case.kv_lengths, dtype=dtype)


def run(case: Case) -> List[str]:
    """Runs one case; returns the problems found (empty when it passes)."""
    import attn  # noqa: F401  (loads the op library)

    v = case.variant
    q, k, val, grad = make_inputs(case)
    text = v.text()
    problems = []
    try:
        out = torch.ops.attn.attention(q, k, val, text, v.op_scale, v.op_causal,
                                       _lengths_tensor(case))
        grads = torch.autograd.grad(out, (q, k, val), grad, allow_unused=True)
    except Exception as error:  # noqa: BLE001  (reported with the case)
        return [f"the op raised {type(error).__name__}: {str(error)[:2000]}"]

    expected, *expected_grads = _reference(case, q, k, val, grad, torch.float64)
    # Where the exact result is (near) zero a relative bound means nothing: allow what float32
    # math of the same formula gets wrong, and the floors of _absolute_floors.
    rounding = [(x - y).norm().item() for x, y in
                zip(_reference(case, q, k, val, grad, torch.float32), [expected, *expected_grads])]
    rounding = [x if math.isfinite(x) else 0.0 for x in rounding]
    floors = _absolute_floors(case, q, k, val, grad, expected)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (q, k, val))]

    tolerance = TOLERANCE[case.dtype]
    dtype = DTYPES[case.dtype]
    if out.dtype != dtype or tuple(out.shape) != tuple(expected.shape):
        problems.append(f"out: dtype/shape {out.dtype} {tuple(out.shape)}, expected {dtype} "
                        f"{tuple(expected.shape)}")
        return problems
    for name, got, want, float32_error, floor in zip(("out", "dq", "dk", "dv"), [out, *grads],
                                                     [expected, *expected_grads], rounding,
                                                     floors):
        if got.dtype != dtype:
            problems.append(f"{name}: dtype {got.dtype}, expected {dtype}")
        if want.numel() and want.abs().max() > torch.finfo(dtype).max:
            continue  # the exact result does not fit the dtype: inf is the right answer
        if not _finite(name, got, problems):
            continue
        error = reference.relative_error(got.detach(), want)
        difference = (got.detach().double() - want).norm().item()
        if not (error < tolerance or difference <= max(10 * float32_error, floor)):
            problems.append(f"{name}: relative error {error:.3g} > {tolerance:g} (|difference| "
                            f"{difference:.3g}, |float64 reference| {want.norm().item():.3g}, "
                            f"float32 reference's own |difference| {float32_error:.3g}, "
                            f"absolute floor {floor:.3g})")
    if case.check_inference:
        with torch.inference_mode():
            again = torch.ops.attn.attention(q.detach(), k.detach(), val.detach(), text,
                                             v.op_scale, v.op_causal, _lengths_tensor(case))
        if not torch.equal(again, out.detach()) and not (
                torch.isnan(again).any() and torch.isnan(out).any()):
            problems.append("out: inference_mode result differs from the autograd forward")
    return problems


def check(case: Case) -> None:
    problems = run(case)
    if problems:
        raise CaseFailure(case, problems)
