"""attn.reparam_qkv_attention (the fused σReparam QKV projection → attention block) against
float64 math: output, the gradients of x, W, b and γ, and u's update in training (eval: the
power step is taken, u unchanged), causal and not, odd lengths, GQA; and attn.nn.Attention's
σReparam path, which runs on the block, against its unfused path."""
import pytest
import torch

import attn
import reference

# (batch, length, embed, heads, kv_heads, head_dim)
SHAPES = [(2, 37, 48, 4, 4, 16), (1, 1, 24, 2, 2, 8), (3, 131, 40, 4, 2, 32), (2, 65, 33, 3, 1, 16)]


def block_inputs(batch, length, embed, heads, kv_heads, head_dim, bias, seed=3):
    generator = torch.Generator().manual_seed(seed)

    def make(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator) * scale

    features = (heads + 2 * kv_heads) * head_dim
    x = make(batch, length, embed).requires_grad_(True)
    weight = make(features, embed, scale=0.3).requires_grad_(True)
    b = make(features, scale=0.1).requires_grad_(True) if bias else None
    gamma = (torch.rand(1, generator=generator) + 2.0).requires_grad_(True)
    u = torch.nn.functional.normalize(make(embed), dim=0)
    return x, weight, b, gamma, u


def composite64(x, weight, b, gamma, u, training, heads, kv_heads, normalizer, causal):
    """reparam_linear → split into heads → attention, all in float64."""
    y, u_after = reference.reparam_linear(x, weight, b, gamma, u, training)
    batch, length, _ = x.shape
    head_dim = weight.shape[0] // (heads + 2 * kv_heads)
    y = y.view(batch, length, heads + 2 * kv_heads, head_dim).transpose(1, 2)
    q, k, v = y.split([heads, kv_heads, kv_heads], dim=1)
    return reference.attention(q, k, v, normalizer, causal), u_after


def assert_close_f32(actual, expected, what, tolerance=1e-5):
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), what
    error = reference.relative_error(actual, expected)
    assert error < tolerance, f"{what}: relative error {error:.2e}"


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}xS{}xE{}-H{}/{}xD{}".format(*s))
def test_block_matches_float64(shape, bias, training, causal, normalizer):
    batch, length, embed, heads, kv_heads, head_dim = shape
    x, weight, b, gamma, u = block_inputs(*shape, bias)
    u_before = u.clone()
    out = attn.reparam_qkv_attention(x, weight, b, gamma, u, training, heads, kv_heads,
                                     normalizer, None, causal)
    inputs = [x, weight, gamma] + ([b] if bias else [])
    ref_inputs = [t.detach().double().requires_grad_(True) for t in inputs]
    expected, expected_u = composite64(ref_inputs[0], ref_inputs[1],
                                       ref_inputs[3] if bias else None, ref_inputs[2],
                                       u_before, training, heads, kv_heads, normalizer, causal)
    assert out.dtype == torch.float32 and out.shape == (batch, heads, length, head_dim)
    assert out.transpose(1, 2).is_contiguous(), "heads merge as a view"
    assert_close_f32(out, expected, "out")
    if training:
        assert_close_f32(u, expected_u, "u")
        assert not torch.equal(u, u_before), "a random u moves in one step"
    else:
        assert torch.equal(u, u_before), "eval takes the power step without storing u"

    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(expected, ref_inputs, grad.double())
    for name, g, w in zip(("x", "weight", "gamma", "bias"), got, want):
        assert g.dtype == torch.float32, name
        assert_close_f32(g, w, "d" + name)


def test_x_without_grad_and_a_non_contiguous_u():
    x, weight, b, gamma, _ = block_inputs(2, 19, 24, 2, 2, 8, True)
    x = x.detach()
    u_storage = torch.nn.functional.normalize(torch.randn(24, 2), dim=0)
    u = u_storage[:, 0]  # strided: the kernel steps a contiguous copy, copied back
    u_before = u.clone()
    out = attn.reparam_qkv_attention(x, weight, b, gamma, u, True, 2)
    expected, expected_u = composite64(x.double(), weight.detach().double(),
                                       b.detach().double(), gamma.detach().double(), u_before,
                                       True, 2, 2, "softmax", False)
    assert_close_f32(out, expected, "out")
    assert_close_f32(u, expected_u, "u")
    grads = torch.autograd.grad(out.sum(), (weight, b, gamma))
    assert all(torch.isfinite(g).all() for g in grads)


def test_errors_name_the_argument():
    x, weight, b, gamma, u = block_inputs(2, 5, 24, 2, 2, 8, True)
    with pytest.raises(RuntimeError, match="not a multiple of heads"):
        attn.reparam_qkv_attention(x, weight[:-1], b[:-1], gamma, u, False, 2)
    with pytest.raises(RuntimeError, match="multiple of kv_heads"):
        attn.reparam_qkv_attention(x, weight, b, gamma, u, False, 3, 2)
    with pytest.raises(RuntimeError, match="float32 only"):
        attn.reparam_qkv_attention(x.double(), weight.double(), b.double(), gamma.double(),
                                   u.double(), False, 2)
    with pytest.raises(RuntimeError, match=r"x must be \[B, S, E\]"):
        attn.reparam_qkv_attention(x[0], weight, b, gamma, u, False, 2)


def test_meta_kernel_gives_the_shapes_and_layout():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(3, 11, 24)
        weight, b = torch.empty(96, 24), torch.empty(96)
        gamma, u = torch.empty(1), torch.empty(24)
        out = torch.ops.attn.reparam_qkv_attention(x, weight, b, gamma, u, True, 4, 0,
                                                   "softmax", None, False)
        assert out.shape == (3, 4, 11, 8)
        assert out.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_nn_attention_runs_the_block_and_matches_its_unfused_path(monkeypatch, training, causal):
    torch.manual_seed(0)
    fused = attn.nn.Attention(48, 4, num_kv_heads=2, causal=causal, sigma_reparam=True)
    with torch.no_grad():  # an unconverged u, so that the power step matters
        fused.qkv.u.copy_(torch.nn.functional.normalize(torch.randn(48), dim=0))
    unfused = attn.nn.Attention(48, 4, num_kv_heads=2, causal=causal, sigma_reparam=True)
    unfused.load_state_dict(fused.state_dict())
    fused.train(training)
    unfused.train(training)
    calls = []
    original = torch.ops.attn.reparam_qkv_attention

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(attn, "reparam_qkv_attention",
                        lambda *a: counted(*a))
    original_fused = type(fused)._fused
    monkeypatch.setattr(type(fused), "_fused",
                        lambda self, x: self is fused and original_fused(self, x))
    x = torch.randn(2, 23, 48)
    y_fused, y_unfused = fused(x), unfused(x)
    assert calls, "the σReparam CPU float32 path runs the fused block"
    assert_close_f32(y_fused, y_unfused.double(), "y")
    assert_close_f32(fused.qkv.u, unfused.qkv.u.double(), "u")
    y_fused.square().sum().backward()
    y_unfused.square().sum().backward()
    for (name, p), q in zip(fused.named_parameters(), unfused.parameters()):
        assert_close_f32(p.grad, q.grad.double(), "d" + name, tolerance=2e-5)


@pytest.mark.parametrize("training", [False, True])
def test_opcheck(training):
    x, weight, b, gamma, u = block_inputs(2, 9, 24, 2, 1, 8, True)
    result = torch.library.opcheck(
        torch.ops.attn.reparam_qkv_attention.default,
        (x, weight, b, gamma, u, training, 2, 1, "softmax", None, True),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    assert all(value == "SUCCESS" for value in result.values()), result


def test_torch_compile_traces_the_block_without_a_graph_break():
    x, weight, b, gamma, u = block_inputs(2, 13, 24, 2, 2, 8, True)

    def block(x):
        return attn.reparam_qkv_attention(x, weight, b, gamma, u, False, 2).square().sum()

    compiled = torch.compile(block, fullgraph=True)
    got = compiled(x)
    got_grads = torch.autograd.grad(got, (x, weight, gamma))
    want = block(x)
    want_grads = torch.autograd.grad(want, (x, weight, gamma))
    assert torch.allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)


def test_block_kernels_come_from_the_jit_with_the_fused_ir_dumped(tmp_path):
    # A fresh process (the JIT reads ATTN_DUMP_DIR once): the block's forward and backward
    # kernels are compiled through attn-fuse-reparam-attention, and the dumped stage after it
    # holds the σReparam forward feeding views of the QKV buffer into the attention call.
    import os
    import subprocess
    import sys
    script = (
        "import torch, attn\n"
        "x = torch.randn(2, 7, 20, requires_grad=True)\n"
        "w = torch.randn(48, 20, requires_grad=True)\n"
        "u = torch.nn.functional.normalize(torch.randn(20), dim=0)\n"
        "attn.reparam_qkv_attention(x, w, None, torch.ones(1), u, True, 2).sum().backward()\n")
    environment = dict(os.environ, ATTN_DUMP_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", script], check=True, env=environment)
    stages = [p for p in tmp_path.rglob("*") if p.is_file()]
    fused = [p for p in stages if "attn-fuse-reparam-attention" in p.name.lower()
             or "AttnFuseReparamAttention" in p.name]
    assert fused, f"no stage after attn-fuse-reparam-attention among {[p.name for p in stages]}"
    text = "\n".join(p.read_text() for p in fused)
    for expected in ("reparam_qkv_attention_fwd", "reparam_qkv_attention_bwd",
                     "call @attn_host_gemm_f32", "memref.expand_shape", "memref.transpose",
                     "call @attn_host_attention_forward", "call @attn_host_attention_backward"):
        assert expected in text, expected
    assert "memref.copy" not in text
