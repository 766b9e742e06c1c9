"""Smoke test of libattn_torch.so from Python: the ops load with torch.ops.load_library and
agree with plain torch math in float64. Exits 77 (ctest: skipped) when Python has no torch.

usage: torch_ops_smoke.py path/to/libattn_torch.so
"""
import math
import sys

try:
    import torch
except ImportError:
    print("python3 has no torch module (Debian: python3-torch); skipping")
    sys.exit(77)


def reference_attention(q, k, v, normalizer, causal=False):
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    if normalizer == "softmax":
        p = scores.softmax(-1)
    else:  # sigmoid with the default bias -ln(Sk)
        p = torch.sigmoid(scores - math.log(k.shape[2]))
        if causal:
            p = p.masked_fill(mask, 0.0)
    return p @ v


def relative_error(actual, expected):
    return ((actual.double() - expected).norm() / expected.norm()).item()


def check_attention():
    torch.manual_seed(7)
    for normalizer in ("softmax", "sigmoid"):
        for causal in (False, True):
            q = torch.randn(2, 4, 37, 32, requires_grad=True)
            k = torch.randn(2, 2, 37, 32, requires_grad=True)
            v = torch.randn(2, 2, 37, 32, requires_grad=True)
            out = torch.ops.attn.attention(q, k, v, normalizer, None, causal)
            expected = reference_attention(q, k, v, normalizer, causal)
            error = relative_error(out, expected)
            assert error < 1e-5, f"{normalizer} causal={causal}: forward error {error}"

            grad = torch.randn_like(out)
            grads = torch.autograd.grad(out, (q, k, v), grad)
            expected_grads = torch.autograd.grad(expected, (q, k, v), grad.double())
            for name, got, want in zip("qkv", grads, expected_grads):
                error = relative_error(got, want)
                assert error < 1e-5, f"{normalizer} causal={causal}: d{name} error {error}"
    print("attention: softmax and sigmoid, causal or not, forward and gradients match")


def check_errors():
    q = torch.randn(1, 1, 4, 16)
    try:
        torch.ops.attn.attention(q, q, q, "sigmiod", None, False)
    except RuntimeError as error:
        assert "did you mean 'sigmoid'" in str(error), str(error)
    else:
        raise AssertionError("a misspelled variant ran")
    print("attention: a misspelled variant raises RuntimeError with a suggestion")


def check_reparam_linear():
    torch.manual_seed(3)
    x = torch.randn(5, 8, dtype=torch.float64)
    weight = torch.randn(6, 8, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    gamma = torch.tensor([1.5], dtype=torch.float64)
    u = torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    u_before = u.clone()
    y = torch.ops.attn.reparam_linear(x, weight, bias, gamma, u, True)
    v_ref = torch.nn.functional.normalize(weight @ u_before, dim=0)
    u_ref = torch.nn.functional.normalize(weight.t() @ v_ref, dim=0)
    sigma = torch.dot(v_ref, weight @ u_ref)
    expected = x @ (gamma / sigma * weight).t() + bias
    assert torch.allclose(u, u_ref, atol=1e-12), "u was not updated in place by one power step"
    assert torch.allclose(y, expected, atol=1e-10), "reparam_linear output differs"
    print("reparam_linear: output and the in-place power-iteration update match")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    torch.ops.load_library(sys.argv[1])
    check_attention()
    check_errors()
    check_reparam_linear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
