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


# ---- The compiled kernels (attn-lower-reparam-linear) in float32 against float64 math, at odd
# sizes (rows longer than a host vector, with tails), batch 0 and 1, train and eval.

ODD_SHAPES = [((0,), 17, 13), ((1,), 17, 13), ((3, 5), 31, 23), ((7,), 33, 45), ((2,), 1, 3)]


def float32_case(batch_shape, in_features, out_features, bias, seed=5):
    generator = torch.Generator().manual_seed(seed)

    def make(*shape):
        return torch.randn(*shape, generator=generator)

    x = make(*batch_shape, in_features).requires_grad_(True)
    weight = make(out_features, in_features).requires_grad_(True)
    b = make(out_features).requires_grad_(True) if bias else None
    gamma = (torch.rand(1, generator=generator) + 0.5).requires_grad_(True)
    u = torch.nn.functional.normalize(make(in_features), dim=0)
    return x, weight, b, gamma, u


def assert_close_f32(actual, expected, what):
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), what
    if expected.numel() == 0 or expected.norm() == 0:
        assert (actual.abs().max().item() if actual.numel() else 0.0) == 0.0, what
        return
    error = reference.relative_error(actual, expected)
    assert error < 1e-5, f"{what}: relative error {error:.2e}"


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}->{s[2]}")
def test_compiled_float32_matches_float64(shape, bias, training):
    batch_shape, in_features, out_features = shape
    x, weight, b, gamma, u = float32_case(batch_shape, in_features, out_features, bias)
    u_before = u.clone()
    y = attn.reparam_linear(x, weight, b, gamma, u, training)
    expected, expected_u = reference.reparam_linear(
        x.detach(), weight.detach().requires_grad_(True),
        None if b is None else b.detach().double().requires_grad_(True),
        gamma.detach().double().requires_grad_(True), u_before, training)
    assert y.dtype == torch.float32
    assert_close_f32(y, expected, "y")
    assert_close_f32(u, expected_u.float(), "u")
    if not training:
        assert torch.equal(u, u_before), "eval takes the power step without storing u"

    # Gradients of a random cotangent, against autograd through the float64 formula (u, v
    # constants) on the same float32 values.
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
    inputs = [x, weight, gamma] + ([b] if bias else [])
    got = torch.autograd.grad(y, inputs, grad)
    ref_inputs = [t.detach().double().requires_grad_(True) for t in inputs]
    ref_y, _ = reference.reparam_linear(ref_inputs[0], ref_inputs[1],
                                        ref_inputs[3] if bias else None, ref_inputs[2],
                                        u_before, training)
    want = torch.autograd.grad(ref_y, ref_inputs, grad.double())
    for name, g, w in zip(("x", "weight", "gamma", "bias"), got, want):
        assert g.dtype == torch.float32, name
        assert_close_f32(g, w, "d" + name)


def test_batch_zero_gives_zero_gradients_and_still_steps_u():
    x, weight, b, gamma, u = float32_case((0,), 19, 7, bias=True)
    u_before = u.clone()
    y = attn.reparam_linear(x, weight, b, gamma, u, True)
    assert y.shape == (0, 7)
    assert not torch.equal(u, u_before), "the power step is taken whatever the batch"
    y.sum().backward()
    for name, tensor in (("weight", weight), ("bias", b), ("gamma", gamma)):
        assert torch.count_nonzero(tensor.grad) == 0, name


def test_x_without_grad_gets_no_gradient_and_strided_inputs_work():
    # A transposed x (rows not contiguous) and a non-contiguous u (a strided slice).
    x_base = torch.randn(21, 6)
    x = x_base.t()  # [6, 21], last stride != 1
    weight = torch.randn(11, 21, requires_grad=True)
    gamma = torch.tensor([1.2], requires_grad=True)
    u_storage = torch.nn.functional.normalize(torch.randn(42), dim=0)
    u = u_storage[::2]
    u_before = u.clone()
    y = attn.reparam_linear(x, weight, None, gamma, u, True)
    expected, expected_u = reference.reparam_linear(x, weight.detach(), None, gamma.detach(),
                                                    u_before, True)
    assert_close_f32(y, expected, "y")
    assert_close_f32(u, expected_u.float(), "u (strided, updated through a copy)")
    y.square().sum().backward()
    assert x.grad is None and weight.grad is not None and gamma.grad is not None


def test_bfloat16_parameters_take_the_aten_formulas():
    # The compiled kernels take float32/float64; bfloat16 parameters (no autocast) still work.
    x, weight, b, gamma, u = float32_case((4,), 24, 10, bias=True)
    cast = [t.detach().to(torch.bfloat16).requires_grad_(True) for t in (x, weight, b, gamma)]
    u16 = u.to(torch.bfloat16)
    y = attn.reparam_linear(cast[0], cast[1], cast[2], cast[3], u16.clone(), True)
    expected, _ = reference.reparam_linear(*(t.detach() for t in cast[:3]), cast[3].detach(),
                                           u16, True)
    assert y.dtype == torch.bfloat16
    assert reference.relative_error(y, expected) < 1e-2
    y.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in cast)


def test_kernels_come_from_the_jit_with_every_stage_dumped(tmp_path):
    # A fresh process (the JIT reads ATTN_DUMP_DIR once): the forward and backward kernels are
    # compiled from attn.reparam_linear, and the dump holds the pass's output, where the
    # product is the host GEMM call.
    import os
    import subprocess
    import sys
    script = (
        "import torch, attn\n"
        "x = torch.randn(3, 20, requires_grad=True)\n"
        "w = torch.randn(9, 20, requires_grad=True)\n"
        "u = torch.nn.functional.normalize(torch.randn(20), dim=0)\n"
        "attn.reparam_linear(x, w, None, torch.ones(1), u, True).sum().backward()\n")
    environment = dict(os.environ, ATTN_DUMP_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", script], check=True, env=environment)
    stages = [p for p in tmp_path.rglob("*") if p.is_file()]
    lowered = [p for p in stages if "attn-lower-reparam-linear" in p.name.lower()
               or "AttnLowerReparamLinear" in p.name]
    assert lowered, f"no stage after attn-lower-reparam-linear among {[p.name for p in stages]}"
    text = "\n".join(p.read_text() for p in lowered)
    assert "call @attn_host_gemm_f32" in text
    assert "reparam_linear_fwd" in text and "reparam_linear_bwd" in text


@pytest.mark.parametrize("lanes", ["8", "4"])
def test_narrower_host_vectors_give_the_same_numbers(lanes):
    # ATTN_CPU_LANES builds the kernels for AVX2 (8 f32 lanes) or SSE-width vectors (4): other
    # tails and masks at the same odd sizes. A fresh process (the lanes are read per compile,
    # the kernels kept per process).
    import os
    import subprocess
    import sys
    script = (
        "import torch, attn, reference\n"
        "g = torch.Generator().manual_seed(3)\n"
        "x = torch.randn(5, 37, generator=g, requires_grad=True)\n"
        "w = torch.randn(19, 37, generator=g, requires_grad=True)\n"
        "b = torch.randn(19, generator=g, requires_grad=True)\n"
        "gamma = torch.tensor([0.7], requires_grad=True)\n"
        "u = torch.nn.functional.normalize(torch.randn(37, generator=g), dim=0)\n"
        "u0 = u.clone()\n"
        "y = attn.reparam_linear(x, w, b, gamma, u, True)\n"
        "ins = [t.detach().double().requires_grad_(True) for t in (x, w, b, gamma)]\n"
        "ref, ref_u = reference.reparam_linear(ins[0], ins[1], ins[2], ins[3], u0, True)\n"
        "dy = torch.randn(5, 19, generator=g)\n"
        "got = torch.autograd.grad(y, (x, w, b, gamma), dy)\n"
        "want = torch.autograd.grad(ref, ins, dy.double())\n"
        "errors = [reference.relative_error(a, e) for a, e in zip((y, u) + got, (ref, ref_u) + want)]\n"
        "assert max(errors) < 1e-5, errors\n")
    environment = dict(os.environ, ATTN_CPU_LANES=lanes, ATTN_CACHE_DISABLE="1")
    subprocess.run([sys.executable, "-c", script], check=True, env=environment)
