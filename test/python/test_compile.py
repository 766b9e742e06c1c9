"""The ops under torch.compile: torch.library.opcheck (schema, autograd registration, fake
kernels, AOT dispatch with static and dynamic shapes), and a transformer block compiled with
fullgraph=True (no graph break) that matches eager forward and backward."""
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


@pytest.mark.parametrize("sample", list(attention_samples()))
def test_opcheck_attention(sample):
    torch.library.opcheck(torch.ops.attn.attention.default, sample)


def test_opcheck_attention_forward_and_backward_ops():
    q, k, v, *options = next(attention_samples())
    q, k, v = (t.detach() for t in (q, k, v))
    torch.library.opcheck(torch.ops.attn._attention_forward.default, (q, k, v, *options))
    out, lse = torch.ops.attn._attention_forward(q, k, v, *options)
    torch.library.opcheck(torch.ops.attn._attention_backward.default,
                          (torch.randn_like(out), q, k, v, out, lse, *options))


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
