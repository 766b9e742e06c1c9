"""attn.reparam_linear and the modules of attn.nn against float64 math."""
import pytest
import torch

import attn
import reference


def random_reparam_inputs(batch_shape=(5,), in_features=8, out_features=6, bias=True,
                          dtype=torch.float64, grad=False):
    generator = torch.Generator().manual_seed(11)

    def make(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    x = make(*batch_shape, in_features).requires_grad_(grad)
    weight = make(out_features, in_features).requires_grad_(grad)
    b = make(out_features).requires_grad_(grad) if bias else None
    gamma = torch.tensor([1.5], dtype=dtype).requires_grad_(grad)
    u = torch.nn.functional.normalize(make(in_features), dim=0)
    return x, weight, b, gamma, u


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_updates_u_only_in_training(training, bias):
    x, weight, b, gamma, u = random_reparam_inputs((3, 5), bias=bias)
    u_before = u.clone()
    y = attn.reparam_linear(x, weight, b, gamma, u, training)
    expected, expected_u = reference.reparam_linear(x, weight, b, gamma, u_before, training)
    assert torch.allclose(y, expected, atol=1e-10)
    assert torch.allclose(u, expected_u if training else u_before, atol=1e-12)
    if training:
        assert not torch.allclose(u, u_before, atol=1e-6), "a random u moves in one step"


def test_eval_takes_the_power_step_without_storing_u():
    # Far from converged, sigma from the stored u (||W u||) and from one power step differ: eval
    # must give the stepped one, as ml-sigma-reparam's get_sigma, and leave u as it was.
    x, weight, b, gamma, u = random_reparam_inputs((4, 6))
    u_before = u.clone()
    y = attn.reparam_linear(x, weight, b, gamma, u, False)
    v = weight @ u_before
    v = v / v.norm()
    stepped = weight.t() @ v
    stepped = stepped / stepped.norm()
    sigma_step = torch.dot(v, weight @ stepped)
    sigma_stored = (weight @ u_before).norm()
    assert abs(sigma_step - sigma_stored) > 1e-3 * sigma_step, "the test needs an unconverged u"
    expected = x @ (gamma / sigma_step * weight).t() + b
    assert torch.allclose(y, expected, atol=1e-10)
    assert torch.equal(u, u_before)


def test_gradients_match_float64_with_u_fixed():
    x, weight, b, gamma, u = random_reparam_inputs(grad=True)
    y = attn.reparam_linear(x, weight, b, gamma, u.clone(), False)
    expected, _ = reference.reparam_linear(x, weight, b, gamma, u, False)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, weight, b, gamma), grad)
    want = torch.autograd.grad(expected, (x, weight, b, gamma), grad)
    for name, g, w in zip(("x", "weight", "bias", "gamma"), got, want):
        assert torch.allclose(g, w, atol=1e-10), name


def test_errors_name_the_argument():
    x, weight, b, gamma, u = random_reparam_inputs()
    with pytest.raises(RuntimeError, match="u must be"):
        attn.reparam_linear(x, weight, b, gamma, u[:3].clone(), True)
    with pytest.raises(RuntimeError, match="x must be"):
        attn.reparam_linear(x[:, :4], weight, b, gamma, u, True)
    with pytest.raises(RuntimeError, match="dtype"):
        attn.reparam_linear(x.float(), weight, b, gamma, u, True)


def test_sigma_reparam_linear_starts_as_its_weight():
    torch.manual_seed(0)
    layer = attn.nn.SigmaReparamLinear(16, 12).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.allclose(layer.eval()(x), plain, rtol=1e-6, atol=1e-9)
    # u is the top singular vector, a fixed point of the power step: training agrees too.
    assert torch.allclose(layer.train()(x), plain, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("variant", ["softmax", "sigmoid"])
@pytest.mark.parametrize("sigma_reparam", [False, True])
def test_attention_module_matches_reference(variant, sigma_reparam):
    torch.manual_seed(1)
    module = attn.nn.Attention(64, num_heads=4, num_kv_heads=2, variant=variant, causal=True,
                               sigma_reparam=sigma_reparam).eval()
    x = torch.randn(2, 23, 64)
    out = module(x)
    assert out.shape == x.shape
    with torch.no_grad():
        q, k, v = module.qkv(x).split([64, 32, 32], dim=-1)
        q = q.reshape(2, 23, 4, 16).transpose(1, 2)
        k = k.reshape(2, 23, 2, 16).transpose(1, 2)
        v = v.reshape(2, 23, 2, 16).transpose(1, 2)
        o = reference.attention(q, k, v, variant, causal=True).float()
        expected = module.proj(o.transpose(1, 2).reshape(2, 23, 64))
    assert reference.relative_error(out, expected) < 1e-5


def test_attention_module_rejects_bad_heads():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        attn.nn.Attention(60, num_heads=8)
    with pytest.raises(ValueError, match="num_kv_heads"):
        attn.nn.Attention(64, num_heads=4, num_kv_heads=3)
