"""The ops under torch.compile: torch.library.opcheck (schema, autograd registration, fake
kernels, AOT dispatch with static and dynamic shapes), and a transformer block compiled with
fullgraph=True (no graph break) that matches eager forward and backward."""
import os
import subprocess
import sys

import pytest
import torch

import attn
import reference


def attention_samples():
    generator = torch.Generator().manual_seed(3)

    def qkv(queries, keys, heads=4, kv_heads=2, dim=16, grad=True):
        return [torch.randn(shape, generator=generator).requires_grad_(grad) for shape in
                [(2, heads, queries, dim), (2, kv_heads, keys, dim), (2, kv_heads, keys, dim)]]

    yield (*qkv(9, 13), "softmax", None, False)
    yield (*qkv(17, 17), "sigmoid", 0.25, True)
    yield (*qkv(5, 7, grad=False), "relu", None, False)
    yield (*qkv(9, 13), "softmax", None, True, torch.tensor([13, 4]))
    # Captures: a document mask from ids [B, S] (i32) and an ALiBi score_mod from per-head
    # slopes [H] (f32, no gradient), with key lengths.
    docs = torch.tensor([[0] * 4 + [1] * 9, [0] * 10 + [1] * 3], dtype=torch.int32)
    slopes = torch.rand(4, generator=generator)
    yield (*qkv(13, 13), CAPTURE_VARIANT, None, False, torch.tensor([13, 11]), [docs, slopes])
    yield (*qkv(13, 13), CAPTURE_VARIANT, 0.3, True, None, [docs.long(), slopes.double()])


CAPTURE_VARIANT = """mlir:func.func @f(%q: tensor<?x?x?x16xf32>, %k: tensor<?x?x?x16xf32>,
    %v: tensor<?x?x?x16xf32>, %docs: tensor<?x?xi32>, %slopes: tensor<?xf32>)
    -> tensor<?x?x?x16xf32> {
  %o = attn.attention %q, %k, %v captures(%docs, %slopes : tensor<?x?xi32>, tensor<?xf32>)
      normalizer(#attn.softmax)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>,
       %m: tensor<?xf32>):
    %slope = tensor.extract %m[%h] : tensor<?xf32>
    %distance = arith.subi %i, %j : index
    %di = arith.index_cast %distance : index to i64
    %df = arith.sitofp %di : i64 to f32
    %penalty = arith.mulf %slope, %df : f32
    %r = arith.subf %s, %penalty : f32
    attn.yield %r : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %m: tensor<?xf32>):
    %di = tensor.extract %d[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %d[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  return %o : tensor<?x?x?x16xf32>
}"""


@pytest.mark.parametrize("sample", list(attention_samples()))
def test_opcheck_attention(sample):
    torch.library.opcheck(torch.ops.attn.attention.default, sample)


@pytest.mark.parametrize("index", [0, 4])  # without and with captures
def test_opcheck_attention_forward_and_backward_ops(index):
    q, k, v, *options = list(attention_samples())[index]
    q, k, v = (t.detach() for t in (q, k, v))
    torch.library.opcheck(torch.ops.attn._attention_forward.default, (q, k, v, *options))
    out, lse = torch.ops.attn._attention_forward(q, k, v, *options)
    torch.library.opcheck(torch.ops.attn._attention_backward.default,
                          (torch.randn_like(out), q, k, v, out, lse, *options))


def test_opcheck_backward_with_capture_gradients():
    """_attention_backward returning the floating captures' gradients (the slopes; the ids are
    integers and have none)."""
    q, k, v, *options = list(attention_samples())[4]
    q, k, v = (t.detach() for t in (q, k, v))
    out, lse = torch.ops.attn._attention_forward(q, k, v, *options)
    torch.library.opcheck(torch.ops.attn._attention_backward.default,
                          (torch.randn_like(out), q, k, v, out, lse, *options, True))
    *_, capture_grads = torch.ops.attn._attention_backward(torch.randn_like(out), q, k, v, out,
                                                           lse, *options, True)
    assert len(capture_grads) == 1 and capture_grads[0].shape == options[-1][1].shape


def test_compiled_call_with_learnable_slopes_matches_eager():
    """A learnable capture under torch.compile(fullgraph=True): its gradient as eager's."""
    q, k, v, variant, scale, causal, lengths, captures = list(attention_samples())[4]
    docs, slopes = captures

    def run(function):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, slopes)]
        out = function(*leaves[:3], variant, scale, causal, lengths, [docs, leaves[3]])
        out.sum().backward()
        return [out] + [t.grad for t in leaves]

    eager = run(torch.ops.attn.attention)
    compiled = run(torch.compile(lambda *args: torch.ops.attn.attention(*args), fullgraph=True))
    for want, got in zip(eager, compiled):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_compiled_call_with_captures_matches_eager():
    """attn.attention with captures under torch.compile(fullgraph=True), forward and backward."""
    q, k, v, variant, scale, causal, lengths, captures = list(attention_samples())[4]

    def run(q, k, v, docs, slopes):
        return attn.attention(q, k, v, variant, scale, causal, lengths, captures=[docs, slopes])

    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True)
    grad = torch.randn(2, 4, 13, 16)
    results = []
    for function in (run, compiled):
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = function(*inputs, *captures)
        results.append((out.detach(), *torch.autograd.grad(out, inputs, grad)))
    for got, want in zip(results[1], results[0]):
        assert reference.relative_error(got, want) < 1e-6


def reparam_samples():
    generator = torch.Generator().manual_seed(4)

    def make(*shape, grad=True):
        return torch.randn(*shape, generator=generator).requires_grad_(grad)

    u = torch.nn.functional.normalize(make(12, grad=False), dim=0)
    yield (make(3, 5, 12), make(8, 12), make(8), make(1), u.clone(), True)
    yield (make(6, 12), make(8, 12), None, make(1), u.clone(), False)
    yield (make(6, 12, grad=False), make(8, 12, grad=False), make(8, grad=False),
           make(1, grad=False), u.clone(), True)


@pytest.mark.parametrize("sample", list(reparam_samples()))
def test_opcheck_reparam_linear(sample):
    torch.library.opcheck(torch.ops.attn.reparam_linear.default, sample)


class Block(torch.nn.Module):
    """A pre-norm transformer block on attn.nn.Attention with σReparam linears."""

    def __init__(self, dim=64, heads=4, variant="sigmoid"):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attention = attn.nn.Attention(dim, heads, num_kv_heads=2, variant=variant,
                                           causal=True, sigma_reparam=True)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(attn.nn.SigmaReparamLinear(dim, 2 * dim), torch.nn.GELU(),
                                       attn.nn.SigmaReparamLinear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def run_step(model, x):
    """Forward and backward; returns the output and the gradients of x and of the parameters."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.square().mean().backward()
    grads = [x.grad] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return out.detach(), grads


@pytest.mark.parametrize("variant", ["softmax", "sigmoid"])
def test_compiled_block_matches_eager_without_graph_breaks(variant):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = Block(variant=variant)
    compiled_model = Block(variant=variant)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, fullgraph=True)  # raises on any graph break
    x = torch.randn(2, 37, 64)

    for step in range(2):  # the second step reuses the compiled graph; u moves in both
        want_out, want_grads = run_step(eager, x)
        got_out, got_grads = run_step(compiled, x)
        assert reference.relative_error(got_out, want_out) < 1e-5, f"step {step}: output"
        for index, (got, want) in enumerate(zip(got_grads, want_grads)):
            assert reference.relative_error(got, want) < 1e-4, f"step {step}: gradient {index}"
        for (name, got), want in zip(compiled_model.named_buffers(), eager.buffers()):
            assert torch.allclose(got, want, atol=1e-6), f"step {step}: buffer {name}"

    explanation = torch._dynamo.explain(Block(variant=variant))(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


SPECULATION_SCRIPT = """
import sys, torch, attn
grad = sys.argv[1] == "grad"
shape = (1, 2, 33, 24)
q, k, v = (torch.randn(shape, requires_grad=grad) for _ in range(3))
attn.attention(q, k, v, variant="relu")
"""


@pytest.mark.parametrize("grad", [True, False])
def test_the_first_forward_compiles_the_backward_only_when_inputs_require_grad(grad, tmp_path):
    # A forward whose inputs require grad compiles dQ and dK/dV beside it (the process exits
    # without calling backward; the exit waits for them); one without grad compiles none.
    environment = dict(os.environ, ATTN_CACHE_DIR=str(tmp_path), ATTN_LOG="info")
    environment.pop("ATTN_CACHE_DISABLE", None)
    environment.pop("ATTN_SPECULATE_BACKWARD", None)
    run = subprocess.run([sys.executable, "-c", SPECULATION_SCRIPT, "grad" if grad else "none"],
                         env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "relu' D=24 Dv=24 fwd" in run.stderr
    for kernel in ("bwd_dq", "bwd_dkdv"):
        assert (f"D=24 Dv=24 {kernel}" in run.stderr) == grad, run.stderr
