"""attn.attention_varlen: packed sequences (cumulative offsets, as FlashAttention's varlen
interface) in one call, against one attn.attention call per sequence and against float64 math,
forward and gradients (captured tensors' included), and the errors a bad call gets."""
import pytest
import torch

import attn
import reference
from test_captures import ALIBI, NORMALIZERS, variant

# (query length, key length) per sequence: empty sequences, a sequence without keys, one key,
# odd lengths, Sq != Sk and lengths past one tile.
LENGTHS = [(7, 7), (0, 5), (3, 0), (1, 1), (150, 150), (37, 65), (64, 19), (0, 0)]


def offsets(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)


def packed_case(lengths, heads=4, kv_heads=2, dim=32, value_dim=None, seed=0,
                dtype=torch.float32):
    """q [Tq, heads, dim], k [Tk, kv_heads, dim], v [Tk, kv_heads, value_dim] and the two offset
    tensors for sequences of (query, key) lengths `lengths`."""
    generator = torch.Generator().manual_seed(seed)
    queries = sum(n for n, _ in lengths)
    keys = sum(m for _, m in lengths)
    q = torch.randn(queries, heads, dim, generator=generator).to(dtype)
    k = torch.randn(keys, kv_heads, dim, generator=generator).to(dtype)
    v = torch.randn(keys, kv_heads, value_dim or dim, generator=generator).to(dtype)
    return ([t.requires_grad_() for t in (q, k, v)], offsets([n for n, _ in lengths]),
            offsets([m for _, m in lengths]))


def sequence(tensor, cumulative, s):
    """Sequence s of a packed tensor as a [1, H, S, D] leaf."""
    rows = tensor.detach()[cumulative[s]:cumulative[s + 1]]
    return rows.transpose(0, 1).unsqueeze(0).clone().requires_grad_()


def unpack(batched):
    """[1, H, S, D] → [S, H, D]."""
    return batched.squeeze(0).transpose(0, 1)


def expect_single_calls_agree(q, k, v, cu_q, cu_k, lengths, packed_call, single_call):
    """Runs `packed_call()` and backpropagates a random gradient; for every sequence s with
    queries and keys, `single_call(qs, ks, vs, s)` (its own [1, H, S, D] call) must give the
    same rows and dq/dk/dv rows; a sequence without either must give zeros."""
    out = packed_call()
    assert out.shape == (q.shape[0], q.shape[1], v.shape[2])
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    for s, (queries, keys) in enumerate(lengths):
        rows, key_rows = slice(cu_q[s], cu_q[s + 1]), slice(cu_k[s], cu_k[s + 1])
        if queries == 0 or keys == 0:
            # Nothing to attend to, or nobody attending: zeros, and zero gradients.
            assert (out[rows] == 0).all() and (dq[rows] == 0).all()
            assert (dk[key_rows] == 0).all() and (dv[key_rows] == 0).all()
            continue
        qs, ks, vs = (sequence(t, c, s) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        alone = single_call(qs, ks, vs, s)
        torch.testing.assert_close(out[rows], unpack(alone), rtol=1e-5, atol=1e-6)
        dqs, dks, dvs = torch.autograd.grad(alone, (qs, ks, vs),
                                            grad[rows].transpose(0, 1).unsqueeze(0))
        torch.testing.assert_close(dq[rows], unpack(dqs), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dk[key_rows], unpack(dks), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dv[key_rows], unpack(dvs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid", "relu", "softmax1"])
@pytest.mark.parametrize("causal", [False, True])
def test_one_packed_call_equals_one_call_per_sequence(normalizer, causal):
    (q, k, v), cu_q, cu_k = packed_case(LENGTHS)
    # A sequence computes what its own unpadded call does (sigmoid's and relu's default
    # constants come from its own key length).
    expect_single_calls_agree(
        q, k, v, cu_q, cu_k, LENGTHS,
        lambda: attn.attention_varlen(q, k, v, cu_q, cu_k, normalizer, is_causal=causal),
        lambda qs, ks, vs, s: attn.attention(qs, ks, vs, normalizer, is_causal=causal))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 2e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("causal", [False, True])
def test_packed_call_matches_float64(dtype, tolerance, causal):
    lengths = [(45, 45), (1, 9), (130, 70), (0, 3)]
    (q, k, v), cu_q, cu_k = packed_case(lengths, heads=6, kv_heads=3, dim=64, value_dim=40,
                                        seed=1, dtype=dtype)
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, is_causal=causal)
    assert out.dtype == dtype
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    for s, (queries, keys) in enumerate(lengths):
        if queries == 0:
            continue
        qs, ks, vs = (sequence(t, c, s).double().detach().requires_grad_()
                      for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        expected = reference.attention_general(qs, ks, vs, causal=causal)
        rows, key_rows = slice(cu_q[s], cu_q[s + 1]), slice(cu_k[s], cu_k[s + 1])
        reference_grads = torch.autograd.grad(
            expected, (qs, ks, vs), grad[rows].double().transpose(0, 1).unsqueeze(0))
        pairs = [(out[rows], expected), (dq[rows], reference_grads[0]),
                 (dk[key_rows], reference_grads[1]), (dv[key_rows], reference_grads[2])]
        for name, (ours, theirs) in zip(("out", "dq", "dk", "dv"), pairs):
            theirs = unpack(theirs)
            # A floor: with one allowed key a softmax row's dq is 0 up to rounding.
            scale = max(theirs.abs().max().item(), 0.1)
            error = (ours.double() - theirs).abs().max().item() / scale
            assert error <= tolerance, f"sequence {s} {name}: relative error {error:.2e}"


# s * weights[b]: a per-sequence temperature, which proves the regions see b = sequence.
SEQUENCE_WEIGHT = """
    %w = tensor.extract %weights_[%b] : tensor<?xf32>
    %r = arith.mulf %s, %w : f32
    attn.yield %r : f32"""


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid", "custom"])
def test_captures_see_the_sequence_index_and_get_gradients(normalizer):
    attribute, body, _ = NORMALIZERS[normalizer]
    text = variant([("weights", "tensor<?xf32>")], score_mod=SEQUENCE_WEIGHT,
                   normalizer=attribute, body=body)
    lengths = [(20, 33), (0, 4), (67, 67), (5, 1)]
    (q, k, v), cu_q, cu_k = packed_case(lengths, heads=2, kv_heads=2, seed=3)
    weights = torch.tensor([0.5, 3.0, 1.5, -2.0], requires_grad=True)
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, text, captures=[weights])
    grad = torch.randn_like(out)
    dq, dweights = torch.autograd.grad(out, (q, weights), grad)
    for s, (queries, keys) in enumerate(lengths):
        rows = slice(cu_q[s], cu_q[s + 1])
        if queries == 0:
            assert dweights[s] == 0
            continue
        qs, ks, vs = (sequence(t, c, s) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        weight = weights.detach()[s:s + 1].clone().requires_grad_()
        alone = attn.attention(qs, ks, vs, text, captures=[weight])
        torch.testing.assert_close(out[rows], unpack(alone), rtol=1e-5, atol=1e-6)
        dqs, dweight = torch.autograd.grad(alone, (qs, weight),
                                           grad[rows].transpose(0, 1).unsqueeze(0))
        torch.testing.assert_close(dq[rows], unpack(dqs), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dweights[s:s + 1], dweight, rtol=1e-4, atol=1e-5)


def test_alibi_slopes_per_head_with_causal_sequences():
    text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI)
    lengths = [(31, 31), (90, 90)]
    (q, k, v), cu_q, cu_k = packed_case(lengths, heads=4, kv_heads=1, seed=4)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625], requires_grad=True)
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, text, is_causal=True, captures=[slopes])
    (dslopes,) = torch.autograd.grad(out.sum(), slopes)
    expected_grad = torch.zeros(4)
    for s in range(len(lengths)):
        qs, ks, vs = (sequence(t, c, s) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        own = slopes.detach().clone().requires_grad_()
        alone = attn.attention(qs, ks, vs, text, is_causal=True, captures=[own])
        torch.testing.assert_close(out[cu_q[s]:cu_q[s + 1]], unpack(alone), rtol=1e-5,
                                   atol=1e-6)
        expected_grad += torch.autograd.grad(alone.sum(), own)[0]
    torch.testing.assert_close(dslopes, expected_grad, rtol=1e-4, atol=1e-5)


def test_no_sequences_and_no_rows():
    q, k, v = torch.zeros(0, 2, 8), torch.zeros(0, 2, 8), torch.zeros(0, 2, 8)
    empty = torch.zeros(1, dtype=torch.int64)
    assert attn.attention_varlen(q, k, v, empty, empty).shape == (0, 2, 8)
    none = torch.zeros(3, dtype=torch.int64)
    assert attn.attention_varlen(q, k, v, none, none).shape == (0, 2, 8)


@pytest.mark.parametrize("cu_q,cu_k,message", [
    ([1, 4, 10], [0, 4, 10], "cu_seqlens_q must start at 0"),
    ([0, 6, 4, 10], [0, 2, 6, 10], "cu_seqlens_q must not decrease, got 6 then 4 at index 2"),
    ([0, 4, 9], [0, 4, 10], "cu_seqlens_q must end at the packed length 10, got 9"),
    ([0, 4, 10], [0, 4, 11], "cu_seqlens_k must end at the packed length 10, got 11"),
    ([0, 4, 10], [0, 10], "one number of sequences, got 3 and 2 offsets"),
])
def test_bad_offsets_are_named(cu_q, cu_k, message):
    q, k, v = (torch.randn(10, 2, 8) for _ in range(3))
    with pytest.raises(RuntimeError, match=message):
        attn.attention_varlen(q, k, v, torch.tensor(cu_q), torch.tensor(cu_k))


def test_bad_shapes_and_dtypes_are_named():
    q, k, v = (torch.randn(10, 2, 8) for _ in range(3))
    cu = torch.tensor([0, 10])
    with pytest.raises(RuntimeError, match=r"q must be \[Tq, Hq, D\] \(rank 3\), got rank 4"):
        attn.attention_varlen(q[None], k, v, cu, cu)
    with pytest.raises(RuntimeError, match="cu_seqlens_k must be an integer tensor"):
        attn.attention_varlen(q, k, v, cu, cu.float())
    with pytest.raises(RuntimeError, match=r"cu_seqlens_q must be \[sequences \+ 1\]"):
        attn.attention_varlen(q, k, v, cu[None], cu)
    with pytest.raises(RuntimeError, match="k and v must have the same length Tk, got 10 and 9"):
        attn.attention_varlen(q, k, v[:9], cu, cu)
    with pytest.raises(RuntimeError, match="multiple of the key/value heads Hkv = 2"):
        attn.attention_varlen(torch.randn(10, 3, 8), k, v, cu, cu)


def test_opcheck_and_compile():
    (q, k, v), cu_q, cu_k = packed_case([(9, 12), (30, 30)], heads=2, kv_heads=1)
    torch.library.opcheck(torch.ops.attn.attention_varlen.default,
                          (q, k, v, cu_q, cu_k, "softmax", None, True, None))
    out = attn.attention_varlen(q, k, v, cu_q, cu_k, "sigmoid")
    compiled = torch.compile(lambda q, k, v: attn.attention_varlen(q, k, v, cu_q, cu_k,
                                                                   "sigmoid"), fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), out)


# A band of keys i - 5 <= j <= i + 3: a mask region, classified per block in each kernel.
BAND_MASK = """
    %c3 = arith.constant 3 : index
    %c5 = arith.constant 5 : index
    %hi = arith.addi %i, %c3 : index
    %jp = arith.addi %j, %c5 : index
    %below = arith.cmpi ule, %j, %hi : index
    %above = arith.cmpi ule, %i, %jp : index
    %keep = arith.andi %below, %above : i1
    attn.yield %keep : i1"""

# docs[b, j] == docs[b, i]: per-sequence document ids, captured (b = the sequence).
DOCUMENT_MASK = """
    %di = tensor.extract %docs_[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %docs_[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1"""


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_mask_regions_in_packed_sequences(normalizer):
    attribute, body, _ = NORMALIZERS[normalizer]
    lengths = [(70, 70), (0, 3), (129, 129), (2, 2)]
    (q, k, v), cu_q, cu_k = packed_case(lengths, heads=2, kv_heads=1, seed=5)
    longest = max(n for n, _ in lengths)
    generator = torch.Generator().manual_seed(6)
    docs = torch.randint(0, 3, (len(lengths), longest), generator=generator,
                         dtype=torch.int32).sort(dim=1).values
    cases = [(variant([], mask=BAND_MASK, normalizer=attribute, body=body), []),
             (variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK, normalizer=attribute,
                      body=body), [docs])]
    for text, captures in cases:
        expect_single_calls_agree(
            q, k, v, cu_q, cu_k, lengths,
            lambda: attn.attention_varlen(q, k, v, cu_q, cu_k, text, captures=captures),
            lambda qs, ks, vs, s: attn.attention(
                qs, ks, vs, text, captures=[docs[s:s + 1, :qs.shape[2]]] if captures else []))


def test_wait_for_compiles_after_a_first_call():
    # The op is registered and returns once the background compiles are done; the results
    # are the same before and after (the optimized tier computes what the quick tier did).
    (q, k, v), cu_q, cu_k = packed_case([(40, 40)], heads=2, kv_heads=2, dim=48)
    before = attn.attention_varlen(q, k, v, cu_q, cu_k, "relu")
    assert attn.wait_for_compiles() is None
    torch.testing.assert_close(attn.attention_varlen(q, k, v, cu_q, cu_k, "relu"), before,
                               rtol=1e-5, atol=1e-6)
