"""attn.attention with kv_lengths: a ragged batch padded to its longest sequence, in one call,
against one call per sequence on the unpadded keys and against float64 math."""
import pytest
import torch

import attn
import reference


def ragged_case(lengths, queries=19, heads=4, kv_heads=2, dim=32, padding=None, seed=0):
    """q, k, v for len(lengths) sequences whose keys are padded to max(lengths) (+3 spare keys);
    the padding keys and values are `padding` (NaN: proof that the kernels never read them)."""
    generator = torch.Generator().manual_seed(seed)
    keys = max(lengths) + 3
    batch = len(lengths)
    q = torch.randn(batch, heads, queries, dim, generator=generator)
    k = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    v = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    if padding is not None:
        for b, length in enumerate(lengths):
            k[b, :, length:] = padding
            v[b, :, length:] = padding
    return [t.requires_grad_() for t in (q, k, v)]


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid", "relu", "softmax1"])
@pytest.mark.parametrize("causal", [False, True])
def test_one_ragged_call_equals_one_call_per_sequence(normalizer, causal):
    lengths = [7, 0, 1, 150, 64]
    q, k, v = ragged_case(lengths, padding=float("nan"))
    kv_lengths = torch.tensor(lengths)
    out = attn.attention(q, k, v, normalizer, is_causal=causal, kv_lengths=kv_lengths)
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    for name, tensor in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert torch.isfinite(tensor).all(), f"{name} read a padding key"
    for b, length in enumerate(lengths):
        qb, kb, vb = (t.detach()[b:b + 1].clone().requires_grad_() for t in (q, k, v))
        alone = attn.attention(qb, kb[:, :, :length], vb[:, :, :length], normalizer,
                               is_causal=causal)
        # A batch entry computes exactly what its own unpadded call does (sigmoid's and relu's
        # default constants come from the entry's own length).
        torch.testing.assert_close(out[b:b + 1], alone, rtol=1e-5, atol=1e-6)
        dqb, dkb, dvb = torch.autograd.grad(alone, (qb, kb, vb), grad[b:b + 1])
        torch.testing.assert_close(dq[b:b + 1], dqb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dk[b:b + 1, :, :length], dkb[:, :, :length], rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(dv[b:b + 1, :, :length], dvb[:, :, :length], rtol=1e-5,
                                   atol=1e-6)
        # Padding keys get exactly zero gradients.
        assert (dk[b, :, length:] == 0).all() and (dv[b, :, length:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ragged_batch_matches_float64(dtype):
    lengths = [130, 3, 0]
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in ragged_case(lengths, seed=1))
    kv_lengths = torch.tensor(lengths, dtype=torch.int32)
    out = attn.attention(q, k, v, kv_lengths=kv_lengths)
    expected = reference.attention_general(q, k, v, kv_lengths=lengths)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert reference.relative_error(out, expected) < tolerance
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, (q, k, v), grad.double())
    for name, g, w in zip("qkv", got, want):
        assert reference.relative_error(g, w) < tolerance, f"d{name}"


def test_full_lengths_equal_no_lengths():
    lengths = [40, 40]
    q, k, v = ragged_case(lengths)
    full = torch.tensor([k.shape[2]] * 2)
    torch.testing.assert_close(attn.attention(q, k, v, kv_lengths=full), attn.attention(q, k, v),
                               rtol=0, atol=0)


def test_meta_tensors_accept_lengths():
    q = torch.empty(2, 4, 9, 16, device="meta")
    k = torch.empty(2, 2, 11, 16, device="meta")
    out = attn.attention(q, k, k, kv_lengths=torch.empty(2, dtype=torch.long, device="meta"))
    assert out.shape == (2, 4, 9, 16) and out.device.type == "meta"


@pytest.mark.parametrize("lengths,message", [
    (torch.tensor([[3, 4]]), "kv_lengths must be \\[B\\] \\(rank 1\\), got rank 2"),
    (torch.tensor([3, 4, 5]), "one length per batch entry, B = 2, got 3"),
    (torch.tensor([3.0, 4.0]), "kv_lengths must be an integer tensor, got Float"),
    (torch.tensor([3, 12]), "kv_lengths must lie in \\[0, Sk = 11\\], got values in \\[3, 12\\]"),
    (torch.tensor([-1, 4]), "kv_lengths must lie in \\[0, Sk = 11\\], got values in \\[-1, 4\\]"),
])
def test_bad_lengths_are_named_errors(lengths, message):
    q = torch.randn(2, 4, 9, 16)
    k = torch.randn(2, 2, 11, 16)
    with pytest.raises(RuntimeError, match=message):
        attn.attention(q, k, k, kv_lengths=lengths)
