"""attn.attention against float64 math: normalizers, causal, GQA, odd and empty lengths, dtypes,
gradients, meta tensors and the errors users see."""
import sys

import pytest
import torch

import attn
import reference


def random_qkv(batch, heads, kv_heads, queries, keys, dim, dtype=torch.float32, grad=False):
    generator = torch.Generator().manual_seed(batch * 1000 + queries * 10 + keys)
    shapes = [(batch, heads, queries, dim), (batch, kv_heads, keys, dim),
              (batch, kv_heads, keys, dim)]
    return [torch.randn(s, generator=generator).to(dtype).requires_grad_(grad) for s in shapes]


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid", "relu"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("queries,keys", [(1, 1), (37, 37), (70, 130), (129, 65)])
def test_forward_and_gradients_match_float64(normalizer, causal, queries, keys):
    q, k, v = random_qkv(2, 4, 2, queries, keys, 32, grad=True)
    out = attn.attention(q, k, v, normalizer, is_causal=causal)
    expected = reference.attention(q, k, v, normalizer, causal)
    assert out.dtype == torch.float32 and out.shape == (2, 4, queries, 32)
    assert reference.relative_error(out, expected) < 1e-5

    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad.double())
    for name, got, want in zip("qkv", grads, expected_grads):
        assert reference.relative_error(got, want) < 1e-5, f"d{name}"


def test_explicit_scale_and_value_head_dim():
    generator = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 9, 16, generator=generator)
    k = torch.randn(1, 2, 5, 16, generator=generator)
    v = torch.randn(1, 2, 5, 24, generator=generator)
    out = attn.attention(q, k, v, is_causal=True, scale=0.3)
    assert out.shape == (1, 2, 9, 24)
    expected = reference.attention(q, k, v, "softmax", True, scale=0.3)
    assert reference.relative_error(out, expected) < 1e-5


@pytest.mark.parametrize("dtype,tolerance", [(torch.bfloat16, 1e-2), (torch.float16, 1e-2),
                                             (torch.float64, 1e-5)])
def test_other_dtypes(dtype, tolerance):
    q, k, v = random_qkv(1, 2, 2, 33, 47, 64, dtype=dtype)
    out = attn.attention(q, k, v)
    assert out.dtype == dtype
    assert reference.relative_error(out, reference.attention(q, k, v)) < tolerance


def test_empty_lengths_give_empty_or_zero_outputs():
    q, k, v = random_qkv(1, 2, 2, 0, 8, 16, grad=True)
    assert attn.attention(q, k, v).shape == (1, 2, 0, 16)
    q, k, v = random_qkv(1, 2, 2, 4, 0, 16, grad=True)
    out = attn.attention(q, k, v)
    assert out.shape == (1, 2, 4, 16) and torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.count_nonzero(q.grad) == 0


def test_meta_tensors_give_shapes_and_dtypes():
    q = torch.empty(3, 8, 100, 64, device="meta", dtype=torch.bfloat16)
    k = torch.empty(3, 2, 77, 64, device="meta", dtype=torch.bfloat16)
    v = torch.empty(3, 2, 77, 48, device="meta", dtype=torch.bfloat16)
    out = attn.attention(q, k, v, "sigmoid")
    assert out.device.type == "meta" and out.shape == (3, 8, 100, 48)
    assert out.dtype == torch.bfloat16


def test_misspelled_variant_suggests_the_name():
    q, k, v = random_qkv(1, 1, 1, 4, 4, 16)
    with pytest.raises(RuntimeError, match="did you mean 'sigmoid'"):
        attn.attention(q, k, v, "sigmiod")


@pytest.mark.parametrize("shapes,message", [
    (((1, 4, 8, 16), (1, 3, 8, 16), (1, 3, 8, 16)), "multiple of the key/value heads"),
    (((1, 2, 8, 16), (1, 2, 8, 32), (1, 2, 8, 16)), "same head dim D"),
    (((1, 2, 8, 16), (1, 2, 8, 16), (1, 2, 9, 16)), "same length Sk"),
    (((2, 8, 16), (2, 8, 16), (2, 8, 16)), "rank 4"),
])
def test_shape_errors_name_the_argument(shapes, message):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(RuntimeError, match=message):
        attn.attention(q, k, v)


def test_dtype_and_scale_errors():
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(RuntimeError, match="one dtype"):
        attn.attention(q, q.double(), q)
    with pytest.raises(RuntimeError, match="float32, bfloat16"):
        attn.attention(q.int(), q.int(), q.int())
    with pytest.raises(RuntimeError, match="scale must be > 0"):
        attn.attention(q, q, q, scale=-1.0)


def test_version_and_library():
    assert attn.__version__.count(".") == 2
    assert attn.library_path.name == "libattn_torch.so"


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch build")
@pytest.mark.parametrize("op", ["attention", "_attention_forward", "_attention_backward",
                                "reparam_linear"])
def test_cuda_build_registers_cuda_and_meta_kernels(op):
    # Against a CUDA wheel the CUDA kernels are compiled and linked in, GPU or not.
    for key in ("CPU", "CUDA", "Meta"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"attn::{op}", key), key


def test_a_build_for_another_torch_is_refused_in_words(monkeypatch):
    import types

    from attn import _loader
    other = types.ModuleType("attn._build_info")
    other.TORCH_VERSION = "2.4.1+cu124"
    monkeypatch.setitem(sys.modules, "attn._build_info", other)
    monkeypatch.setattr(attn, "_build_info", other, raising=False)  # an installed package has it
    with pytest.raises(ImportError, match=r"built against torch 2\.4\.1.*rebuild"):
        _loader._check_torch_version()
    same = types.ModuleType("attn._build_info")
    same.TORCH_VERSION = torch.__version__
    monkeypatch.setitem(sys.modules, "attn._build_info", same)
    monkeypatch.setattr(attn, "_build_info", same, raising=False)
    _loader._check_torch_version()
