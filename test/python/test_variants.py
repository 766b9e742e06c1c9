"""A variant means the same at every size: `mlir:` IR written with static sizes in its types is
exact at other sizes (size-dependent defaults come from the run-time lengths), every example in
frontend/examples runs at sizes other than the ones written in it, and what a variant cannot
serve is a clear error."""
import math
import pathlib
import re

import pytest
import torch

import attn
import reference

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "frontend" / "examples"
F32_TOLERANCE = 2e-5


def static_variant(attribute, shape, dv=None, extra=""):
    t = "tensor<%sxf32>" % "x".join(map(str, shape))
    tv = t if dv is None else "tensor<%sxf32>" % "x".join(map(str, shape[:3] + [dv]))
    return (f"mlir:func.func @f(%q: {t}, %k: {t}, %v: {tv}) -> {tv} {{\n"
            f"  %o = attn.attention %q, %k, %v normalizer({attribute}) {extra} : {t}, {t}, {tv} -> {tv}\n"
            f"  return %o : {tv}\n}}")


def scores_of(q, k, scale=None):
    groups = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(groups, dim=1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return q.double() @ k.transpose(-2, -1) * scale


def combine(p, v, q_heads):
    return p @ v.double().repeat_interleave(q_heads // v.shape[1], dim=1)


def mask_of(queries, keys, causal=False, window=None):
    return reference._allowed_by_attributes(queries, keys, causal, window)


def softmax_rows(scores, allowed):
    return scores.masked_fill(~allowed, -math.inf).softmax(-1).nan_to_num(0.0)


def check_forward_and_gradients(variant, q, k, v, probabilities, tolerance=F32_TOLERANCE,
                                kv_lengths=None, captures=None):
    """Output and the three gradients against float64 autograd through `probabilities`."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = torch.ops.attn.attention(q, k, v, variant, None, False, kv_lengths, captures)
    grad = torch.randn_like(out)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    expected = combine(probabilities(q64, k64), v64, q.shape[1])
    expected.backward(grad.double())
    for name, actual, wanted in [("out", out, expected), ("dq", q.grad, q64.grad),
                                 ("dk", k.grad, k64.grad), ("dv", v.grad, v64.grad)]:
        assert not actual.isnan().any(), f"{name} has NaN"
        error = reference.relative_error(actual, wanted)
        assert error < tolerance, f"{name}: relative error {error:.3g}"


def test_sigmoid_default_bias_follows_the_run_time_key_length():
    # Written for 64 keys, called with 256: the bias is -ln 256, not -ln 64.
    variant = static_variant("#attn.sigmoid", [1, 2, 64, 32])
    q, k, v = (torch.randn(1, 2, 256, 32) for _ in range(3))
    check_forward_and_gradients(
        variant, q, k, v, lambda q, k: torch.sigmoid(scores_of(q, k) - math.log(256)))


def test_relu_default_scale_follows_the_run_time_key_length():
    variant = static_variant("#attn.relu", [1, 2, 64, 32])
    q, k, v = torch.randn(1, 2, 40, 32), torch.randn(1, 2, 77, 32), torch.randn(1, 2, 77, 32)
    check_forward_and_gradients(variant, q, k, v,
                                lambda q, k: torch.relu(scores_of(q, k)) / 77)


def test_window_covering_the_static_length_is_kept():
    # window = 100 covers the 64 written in the types, but not the 256 of the call.
    variant = static_variant("#attn.softmax", [1, 2, 64, 32], extra="{window = 100}")
    q, k, v = (torch.randn(1, 2, 256, 32) for _ in range(3))
    allowed = mask_of(256, 256, window=100)
    check_forward_and_gradients(variant, q, k, v,
                                lambda q, k: softmax_rows(scores_of(q, k), allowed))


def test_static_batch_and_heads_are_not_a_contract():
    variant = static_variant("#attn.softmax", [1, 8, 64, 16])
    q, k, v = torch.randn(3, 4, 5, 16), torch.randn(3, 2, 9, 16), torch.randn(3, 2, 9, 16)
    check_forward_and_gradients(variant, q, k, v,
                                lambda q, k: scores_of(q, k).softmax(-1))


def test_head_dim_unlike_the_variant_is_a_clear_error():
    variant = static_variant("#attn.softmax", [1, 2, 64, 32])
    x = torch.randn(1, 2, 64, 16)
    with pytest.raises(RuntimeError, match=r"head dims D = 32, Dv = 32 but the inputs have "
                                           r"D = 16, Dv = 16"):
        torch.ops.attn.attention(x, x, x, variant, None, False)


def test_first_key_blocks_fully_masked_by_a_score_mod_give_no_nan():
    # keys j < 64 (the whole first block) masked for every row, and row 7 masked entirely.
    t = "tensor<?x?x?x32xf32>"
    variant = (f"mlir:func.func @f(%q: {t}, %k: {t}, %v: {t}) -> {t} {{\n"
               f"  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : {t}, {t}, {t} -> {t}\n"
               "  score_mod {\n"
               "  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):\n"
               "    %c64 = arith.constant 64 : index\n"
               "    %c7 = arith.constant 7 : index\n"
               "    %ninf = arith.constant 0xFF800000 : f32\n"
               "    %early = arith.cmpi ult, %j, %c64 : index\n"
               "    %row = arith.cmpi eq, %i, %c7 : index\n"
               "    %masked = arith.ori %early, %row : i1\n"
               "    %r = arith.select %masked, %ninf, %s : f32\n"
               "    attn.yield %r : f32\n"
               "  }\n"
               f"  return %o : {t}\n}}")
    q, k, v = torch.randn(2, 2, 33, 32), torch.randn(2, 2, 100, 32), torch.randn(2, 2, 100, 32)
    allowed = (torch.arange(100) >= 64).expand(33, 100).clone()
    allowed[7] = False
    check_forward_and_gradients(variant, q, k, v,
                                lambda q, k: softmax_rows(scores_of(q, k), allowed))
    out = torch.ops.attn.attention(q, k, v, variant, None, False)
    assert out[:, :, 7].abs().max() == 0, "a row with no allowed key gives 0"


# --- every example, at sizes other than those written in it ---------------------------------

def example_functions():
    """(file, function name, standalone module text) for every func.func of the examples."""
    found = []
    for path in sorted(EXAMPLES.glob("*.mlir")):
        text = path.read_text()
        for match in re.finditer(r"^func\.func @(\w+)", text, re.M):
            start, depth, end = match.start(), 0, None
            for index in range(text.index("{", match.end()), len(text)):
                depth += {"{": 1, "}": -1}.get(text[index], 0)
                if depth == 0:
                    end = index + 1
                    break
            found.append((path.name, match.group(1), text[start:end]))
    return found


def alibi_scores(q, k):
    s = scores_of(q, k)
    heads = torch.arange(q.shape[1], dtype=torch.float64).view(1, -1, 1, 1)
    i = torch.arange(q.shape[2], dtype=torch.float64).view(-1, 1)
    j = torch.arange(k.shape[2], dtype=torch.float64).view(1, -1)
    return s - torch.exp2(-(heads + 1)) * (i - j)


def attenuated_sigmoid(s):
    return 0.5 * (1 + torch.tanh(s)) * torch.exp(-0.1 * s * s)


# What each example computes, in float64: (probabilities(q, k), D, Dv, Hq, Hkv, Sq, Sk). The
# sizes differ from those written in the example; a window must matter at them.
EXAMPLE_REFERENCES = {
    "alibi": (lambda q, k: softmax_rows(alibi_scores(q, k), mask_of(q.shape[2], k.shape[2], True)),
              64, 64, 4, 4, 21, 37),
    "custom_normalizer": (lambda q, k: attenuated_sigmoid(scores_of(q, k)), 64, 32, 2, 1, 19, 70),
    "relu_window": (lambda q, k: torch.relu(scores_of(q, k)) / k.shape[2]
                    * mask_of(q.shape[2], k.shape[2], True, 256), 64, 64, 2, 2, 300, 300),
    "sigmoid_default_bias": (lambda q, k: torch.sigmoid(scores_of(q, k) - math.log(k.shape[2])),
                             128, 128, 2, 1, 17, 93),
    "sigmoid_explicit": (lambda q, k: torch.sigmoid(scores_of(q, k, 0.125) - 3.5)
                         * (torch.arange(k.shape[2]) < EXAMPLE_KEY_LENGTHS.view(-1, 1, 1, 1)),
                         64, 64, 4, 4, 23, 41),
    "softmax_gqa_causal": (lambda q, k: softmax_rows(scores_of(q, k),
                                                     mask_of(q.shape[2], k.shape[2], True)),
                           64, 64, 6, 3, 45, 45),
}
def document_allowed(queries, keys, length):
    i, j = torch.arange(queries).view(-1, 1), torch.arange(keys).view(1, -1)
    return torch.div(i, length, rounding_mode="floor") == torch.div(j, length,
                                                                   rounding_mode="floor")


def prefix_lm_allowed(queries, keys, prefix):
    i, j = torch.arange(queries).view(-1, 1), torch.arange(keys).view(1, -1)
    return (j < prefix) | (j <= i)


def natten_allowed(queries, keys, width, reach):
    i, j = torch.arange(queries).view(-1, 1), torch.arange(keys).view(1, -1)
    rows = (torch.div(i, width, rounding_mode="floor")
            - torch.div(j, width, rounding_mode="floor")).abs()
    cols = (i % width - j % width).abs()
    return (rows <= reach) & (cols <= reach)


# The mask-region examples (frontend/examples/masks.mlir) at sizes where their masks leave whole
# key blocks empty, full and partial.
EXAMPLE_REFERENCES.update({
    "document_mask": (lambda q, k: softmax_rows(scores_of(q, k),
                                                document_allowed(q.shape[2], k.shape[2], 256)),
                      64, 64, 2, 2, 700, 700),
    "prefix_lm": (lambda q, k: softmax_rows(scores_of(q, k),
                                            prefix_lm_allowed(q.shape[2], k.shape[2], 64)),
                  64, 64, 4, 2, 333, 333),
    "natten_2d": (lambda q, k: torch.sigmoid(scores_of(q, k) - math.log(k.shape[2]))
                  * natten_allowed(q.shape[2], k.shape[2], 32, 3), 32, 32, 2, 1, 640, 640),
})
# The captured-tensor examples (frontend/examples/captures.mlir): each example's captures for
# batch 2 at its reference sizes (EXAMPLE_CAPTURES), and what it computes with them.
CAPTURE_DOCUMENTS = torch.tensor([[0] * 100 + [1] * 3 + [2] * 197, [0] * 250 + [1] * 50],
                                 dtype=torch.int32)
CAPTURE_TABLE = torch.randn(3, 2047, generator=torch.Generator().manual_seed(15))
CAPTURE_SLOPES = torch.exp2(-8 * torch.arange(1, 5, dtype=torch.float64) / 4).float()
EXAMPLE_CAPTURES = {
    "document_ids": [CAPTURE_DOCUMENTS],
    "relative_position_bias": [CAPTURE_TABLE],
    "alibi_slopes": [CAPTURE_SLOPES],
}


def relative_bias_scores(q, k):
    i = torch.arange(q.shape[2]).view(-1, 1)
    j = torch.arange(k.shape[2]).view(1, -1)
    return scores_of(q, k) + CAPTURE_TABLE.double()[:, i - j + 1023].unsqueeze(0)


def alibi_slope_scores(q, k):
    i = torch.arange(q.shape[2], dtype=torch.float64).view(-1, 1)
    j = torch.arange(k.shape[2], dtype=torch.float64).view(1, -1)
    return scores_of(q, k) - CAPTURE_SLOPES.double().view(1, -1, 1, 1) * (i - j)


EXAMPLE_REFERENCES.update({
    "document_ids": (lambda q, k: softmax_rows(
        scores_of(q, k), CAPTURE_DOCUMENTS[:, None, :, None] == CAPTURE_DOCUMENTS[:, None, None, :]),
        64, 64, 8, 4, 300, 300),
    "relative_position_bias": (lambda q, k: softmax_rows(relative_bias_scores(q, k),
                                                         mask_of(q.shape[2], k.shape[2])),
                               64, 64, 3, 1, 77, 140),
    "alibi_slopes": (lambda q, k: torch.sigmoid(alibi_slope_scores(q, k) - math.log(k.shape[2]))
                     * mask_of(q.shape[2], k.shape[2], True), 64, 64, 4, 2, 57, 57),
})
# Key lengths for the examples that take kv_lengths (batch 2).
EXAMPLE_KEY_LENGTHS = torch.tensor([29, 0])
# Examples with operands the torch op does not take yet: a clear error, never a wrong number.
EXAMPLE_ERRORS = {}

# softcap.mlir's bias [1, 1, Sq, Sk]: its Sq and Sk follow the call's, its broadcast 1s stay.
SOFTCAP_BIAS = torch.randn(1, 1, 33, 70, generator=torch.Generator().manual_seed(3))
EXAMPLE_CAPTURES["softcap_bias"] = [SOFTCAP_BIAS]
EXAMPLE_REFERENCES["softcap_bias"] = (
    lambda q, k: softmax_rows(30 * torch.tanh(scores_of(q, k) / 30) + SOFTCAP_BIAS.double(),
                              mask_of(q.shape[2], k.shape[2])),
    64, 64, 4, 4, 33, 70)


@pytest.mark.parametrize("file,name,text", example_functions(), ids=lambda x: str(x)[:40])
def test_example_runs_at_other_sizes(file, name, text):
    if "attn.attention" not in text:
        pytest.skip(f"{name} holds no attn.attention")
    variant = "mlir:" + text
    if name in EXAMPLE_ERRORS:
        x = torch.randn(2, 4, 8, 64)
        with pytest.raises(RuntimeError, match=EXAMPLE_ERRORS[name]):
            torch.ops.attn.attention(x, x, x, variant, None, False)
        return
    assert name in EXAMPLE_REFERENCES, (
        f"example {file}:@{name} has no float64 reference: add one to EXAMPLE_REFERENCES")
    probabilities, d, dv, hq, hkv, sq, sk = EXAMPLE_REFERENCES[name]
    torch.manual_seed(len(name))
    q, k, v = torch.randn(2, hq, sq, d), torch.randn(2, hkv, sk, d), torch.randn(2, hkv, sk, dv)
    lengths = EXAMPLE_KEY_LENGTHS if "kv_lengths(" in text else None
    captures = EXAMPLE_CAPTURES.get(name)
    assert (captures is not None) == ("captures(" in text or " bias(%" in text), (
        f"example {file}:@{name}: its captures belong in EXAMPLE_CAPTURES")
    check_forward_and_gradients(variant, q, k, v, probabilities, kv_lengths=lengths,
                                captures=captures)


def softmax1_rows(scores, allowed):
    """exp(s) / (1 + sum exp(s)) over the allowed keys, shifted by max(0, row max) in float64."""
    masked = scores.masked_fill(~allowed, -math.inf)
    shift = masked.amax(-1, keepdim=True).clamp(min=0.0)
    numerators = torch.exp(masked - shift)
    return numerators / (torch.exp(-shift) + numerators.sum(-1, keepdim=True))


@pytest.mark.parametrize("causal_window", [(False, None), (True, None), (True, 5)])
@pytest.mark.parametrize("shape", [(2, 4, 2, 37, 53, 32), (1, 2, 1, 1, 1, 16), (1, 1, 1, 130, 70, 64)])
def test_softmax1_is_the_off_by_one_softmax(shape, causal_window):
    """#attn.softmax1 (added in the dialect only) against float64, forward and gradients: rows
    may sum to less than 1, a row whose every key is masked gives 0 (Sq > Sk with causal)."""
    b, hq, hkv, sq, sk, d = shape
    causal, window = causal_window
    torch.manual_seed(sq * sk + d)
    q = torch.randn(b, hq, sq, d) * 2
    k = torch.randn(b, hkv, sk, d) * 2
    v = torch.randn(b, hkv, sk, d)
    extra = "{causal" + (f", window = {window}" if window is not None else "") + "}" if causal else ""
    variant = static_variant("#attn.softmax1", ["?", "?", "?", d], extra=extra)
    allowed = mask_of(sq, sk, causal, window)
    check_forward_and_gradients(variant, q, k, v,
                                lambda q64, k64: softmax1_rows(scores_of(q64, k64), allowed))
    # Every score -sqrt(D): with an all-ones V each row gives its mass Sk e^s / (1 + Sk e^s),
    # less than the 1 softmax gives.
    mass = sk * math.exp(-math.sqrt(d)) / (1 + sk * math.exp(-math.sqrt(d)))
    out = torch.ops.attn.attention(torch.ones(b, hq, sq, d), -torch.ones(b, hkv, sk, d),
                                   torch.ones(b, hkv, sk, d), "softmax1", None, False)
    assert torch.allclose(out, torch.full_like(out, mass), rtol=1e-5), (out.flatten()[0], mass)
