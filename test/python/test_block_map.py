"""The block map of mask regions on the CPU: the forward classifies each (query tile, key block)
once and writes the map, the backward's dQ and dK/dV kernels read the forward's entries instead
of evaluating the region again, and later calls with the same lengths and mask captures reuse
it; a capture changed in place gets a new map (never a stale one)."""
import pytest
import torch

import attn
import reference
from test_captures import DOCUMENT_MASK, document_ids, qkv, same_document, variant

TOLERANCE = 2e-5
DOCUMENTS = variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK)
# A mask that reads h: each head keeps a window of its own width.
PER_HEAD_WINDOW = variant([], mask="""
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    %h1 = arith.addi %h, %c1 : index
    %w = arith.muli %h1, %c64 : index
    %d = arith.subi %i, %j : index
    %near = arith.cmpi sle, %d, %w : index
    %past = arith.cmpi sge, %d, %c0 : index
    %keep = arith.andi %near, %past : i1
    attn.yield %keep : i1""")


def block_maps(clear=False):
    return torch.ops.attn._block_maps(clear)


@pytest.fixture(autouse=True)
def empty_cache():
    block_maps(clear=True)
    yield
    block_maps(clear=True)


def documents_case(length=700, seed=3):
    docs = document_ids([[300, 129, 271], [64, 500, 136]])[:, :length]
    q, k, v = qkv(2, 2, length, seed=seed)
    return docs, q, k, v


def reference_documents(q, k, v, docs):
    keep = same_document(docs)
    return reference.attention_general(
        q.double(), k.double(), v.double(), normalizer="softmax",
        score_mod=lambda s, b, h, i, j: (s, keep))


def gradients(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


def test_forward_writes_the_map_the_backward_reads():
    docs, q, k, v = documents_case()
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attn.attention(*inputs, DOCUMENTS, captures=[docs])
    (map_,) = block_maps()
    # [B (the region reads b), 1 (not h), query tiles, key blocks], every entry classified.
    assert map_.dtype == torch.int8 and map_.shape[:2] == (2, 1)
    assert set(map_.unique().tolist()) <= {0, 1, 2} and (map_ == 0).any() and (map_ == 2).any()
    grad = torch.randn_like(out)
    dq, dk, dv = gradients(out, inputs, grad)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    expected = reference_documents(q64, k64, v64, docs)
    want = torch.autograd.grad(expected, (q64, k64, v64), grad.double())
    assert reference.relative_error(out, expected) < TOLERANCE
    for name, got, wanted in zip(("dq", "dk", "dv"), (dq, dk, dv), want):
        assert reference.relative_error(got, wanted) < TOLERANCE, name
    # The backward found the forward's map: still the only one.
    assert len(block_maps()) == 1

    # Proof that both backward kernels read the entries rather than classify: a map that says
    # "empty" everywhere, written after the forward, leaves every gradient zero.
    out = attn.attention(*inputs, DOCUMENTS, captures=[docs])
    (map_,) = block_maps()
    map_.fill_(0)
    dq, dk, dv = gradients(out, inputs, grad)
    assert dq.abs().max() == 0 and dk.abs().max() == 0 and dv.abs().max() == 0


def test_later_calls_reuse_the_map_and_a_changed_capture_gets_a_new_one():
    docs, q, k, v = documents_case(seed=5)
    attn.attention(q, k, v, DOCUMENTS, captures=[docs])
    # Another layer with the same document ids (a copy: compared by value) shares the map.
    attn.attention(k, q, v, DOCUMENTS, captures=[docs.clone()])
    assert len(block_maps()) == 1
    # Changed in place: a new map, and the result follows the new documents.
    docs[:, 350:] = 7
    out = attn.attention(q, k, v, DOCUMENTS, captures=[docs])
    assert len(block_maps()) == 2
    assert reference.relative_error(out, reference_documents(q, k, v, docs)) < TOLERANCE
    # Other lengths: another map.
    attn.attention(q[:, :, :500], k[:, :, :500], v[:, :, :500], DOCUMENTS,
                   captures=[docs[:, :500].contiguous()])
    assert len(block_maps()) == 3


def test_a_mask_that_reads_the_head_has_a_map_per_head():
    q, k, v = qkv(1, 3, 520, seed=7)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attn.attention(*inputs, PER_HEAD_WINDOW)
    (map_,) = block_maps()
    assert map_.shape[:2] == (1, 3)
    i = torch.arange(520)[:, None]
    j = torch.arange(520)[None, :]
    width = 64 * torch.arange(1, 4)[:, None, None]
    keep = ((i - j <= width) & (i - j >= 0))[None]
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    expected = reference.attention_general(q64, k64, v64, normalizer="softmax",
                                           score_mod=lambda s, b, h, i, j: (s, keep))
    grad = torch.randn_like(out)
    got = gradients(out, inputs, grad)
    want = torch.autograd.grad(expected, (q64, k64, v64), grad.double())
    assert reference.relative_error(out, expected) < TOLERANCE
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert reference.relative_error(g, w) < TOLERANCE, name


def test_ragged_batches_have_a_map_per_batch():
    docs, q, k, v = documents_case(seed=9)
    text = variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK, kv_lengths=True)
    lengths = torch.tensor([700, 333])
    attn.attention(q, k, v, text, captures=[docs], kv_lengths=lengths)
    (map_,) = block_maps()
    assert map_.shape[0] == 2
    attn.attention(q, k, v, text, captures=[docs], kv_lengths=torch.tensor([700, 200]))
    assert len(block_maps()) == 2


# Keys whose position modulo 256 is 91 or more: with a window of 37, a forward key block that
# started at a window's first key (i - 37, off the 128-key grid) would see only allowed keys
# where the grid's block holds forbidden ones its rows can see.
LATE_KEYS = variant([], mask="""
    %c91 = arith.constant 91 : index
    %c256 = arith.constant 256 : index
    %r = arith.remsi %j, %c256 : index
    %keep = arith.cmpi sge, %r, %c91 : index
    attn.yield %keep : i1""")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask", ["late keys", "documents"])
def test_a_window_attribute_with_a_mask_region_reads_the_entries_of_its_blocks(causal, mask):
    # A window's first key (i - 37) is off the key-block grid: the kernels' block loops start
    # on the grid, so that the entries the forward writes are the blocks the backward reads.
    docs, q, k, v = documents_case(seed=11)
    i, j = torch.arange(700)[:, None], torch.arange(700)[None, :]
    attributes = "{causal, window = 37}" if causal else "{window = 37}"
    if mask == "documents":
        text = variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK, attributes=attributes)
        captures, keep = [docs], same_document(docs)
    else:
        text = LATE_KEYS.replace("normalizer(#attn.softmax) ",
                                 "normalizer(#attn.softmax) " + attributes)
        captures, keep = [], (j % 256 >= 91)[None, None]
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attn.attention(*inputs, text, captures=captures)
    grad = torch.randn_like(out)
    got = gradients(out, inputs, grad)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    expected = reference.attention_general(q64, k64, v64, normalizer="softmax", causal=causal,
                                           window=37, score_mod=lambda s, b, h, i, j: (s, keep))
    want = torch.autograd.grad(expected, (q64, k64, v64), grad.double())
    assert reference.relative_error(out, expected) < TOLERANCE
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert reference.relative_error(g, w) < TOLERANCE, name
