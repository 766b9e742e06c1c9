"""attn.attention with captured tensors: score_mod and mask regions of `mlir:` variants that read
extra tensors (document ids, a relative-position bias table, per-head ALiBi slopes), forward and
gradients against float64 math for every normalizer, and the errors a call gets for captures
that do not fit its variant (never a result computed from outside a capture)."""
import math

import pytest
import torch

import attn
import reference

F32_TOLERANCE = 2e-5


# --- variants ----------------------------------------------------------------------------------

def variant(captures, mask=None, score_mod=None, normalizer="#attn.softmax", body=None,
            dim=32, attributes="", kv_lengths=False, argument_order=None):
    """An `mlir:` variant whose attn.attention captures `captures` [(name, type)] (in that order)
    and whose regions are `mask` / `score_mod` (bodies without the block header); the function
    takes them in `argument_order` (default: the captures' order)."""
    t = f"tensor<?x?x?x{dim}xf32>"
    names = [name for name, _ in captures]
    types = dict(captures)
    order = argument_order or names
    arguments = [f"%q: {t}", f"%k: {t}", f"%v: {t}"]
    if kv_lengths:
        arguments.append("%lengths: tensor<?xi64>")
    arguments += [f"%{name}: {types[name]}" for name in order]
    operands = ""
    if kv_lengths:
        operands += " kv_lengths(%lengths : tensor<?xi64>)"
    if captures:
        operands += (" captures(" + ", ".join("%" + n for n in names) + " : "
                     + ", ".join(types[n] for n in names) + ")")
    region_captures = "".join(f", %{n}_: {types[n]}" for n in names)
    text = (f"func.func @f({', '.join(arguments)}) -> {t} {{\n"
            f"  %o = attn.attention %q, %k, %v{operands} normalizer({normalizer}) {attributes}\n"
            f"      : {t}, {t}, {t} -> {t}\n")
    if body is not None:
        text += f"  normalizer_body {{\n  ^bb0(%s: f32):\n{body}\n  }}\n"
    if score_mod is not None:
        text += ("  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index"
                 f"{region_captures}):\n{score_mod}\n  }}\n")
    if mask is not None:
        text += ("  mask {\n  ^bb0(%b: index, %h: index, %i: index, %j: index"
                 f"{region_captures}):\n{mask}\n  }}\n")
    return "mlir:" + text + f"  return %o : {t}\n}}"


DOCUMENT_MASK = """
    %di = tensor.extract %docs_[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %docs_[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1"""


def relative_bias(reach):
    """s + table[h, i - j + reach]: a [H, 2 reach + 1] table covers distances up to `reach`."""
    return f"""
    %reach = arith.constant {reach} : index
    %d = arith.subi %i, %j : index
    %index = arith.addi %d, %reach : index
    %bias = tensor.extract %table_[%h, %index] : tensor<?x?xf32>
    %r = arith.addf %s, %bias : f32
    attn.yield %r : f32"""


ALIBI = """
    %slope = tensor.extract %slopes_[%h] : tensor<?xf32>
    %d = arith.subi %i, %j : index
    %di = arith.index_cast %d : index to i64
    %df = arith.sitofp %di : i64 to f32
    %penalty = arith.mulf %slope, %df : f32
    %r = arith.subf %s, %penalty : f32
    attn.yield %r : f32"""

# p = 0.5 (1 + tanh s) exp(-0.1 s^2): an attenuated sigmoid (frontend/examples/custom.mlir).
CUSTOM_BODY = """
    %half = arith.constant 0.5 : f32
    %one = arith.constant 1.0 : f32
    %decay = arith.constant -0.1 : f32
    %t = math.tanh %s : f32
    %t1 = arith.addf %t, %one : f32
    %sig = arith.mulf %t1, %half : f32
    %s2 = arith.mulf %s, %s : f32
    %e = arith.mulf %s2, %decay : f32
    %g = math.exp %e : f32
    %p = arith.mulf %sig, %g : f32
    attn.yield %p : f32"""

NORMALIZERS = {
    # name: (IR attribute, normalizer_body, float64 normalizer for reference.attention_general)
    "softmax": ("#attn.softmax", None, "softmax"),
    "sigmoid": ("#attn.sigmoid", None, lambda s, keys: torch.sigmoid(s - torch.log(
        torch.as_tensor(keys, dtype=s.dtype)))),
    "relu": ("#attn.relu", None, lambda s, keys: torch.relu(s) / keys),
    "custom": ("#attn.custom", CUSTOM_BODY,
               lambda s, keys: 0.5 * (1 + torch.tanh(s)) * torch.exp(-0.1 * s * s)),
}


# --- inputs and float64 references ------------------------------------------------------------

def document_ids(documents):
    """[B, S] int32 from per-batch document lengths (each row sums to S)."""
    rows = []
    for lengths in documents:
        rows.append(torch.cat([torch.full((n,), d, dtype=torch.int32)
                               for d, n in enumerate(lengths)]))
    return torch.stack(rows)


def qkv(batch, heads, length, dim=32, kv_heads=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    kv_heads = kv_heads or heads
    return [torch.randn(shape, generator=generator) for shape in
            [(batch, heads, length, dim), (batch, kv_heads, length, dim),
             (batch, kv_heads, length, dim)]]


def same_document(docs):
    """The document mask as reference.attention_general's score_mod keep tensor."""
    return docs.long()[:, None, :, None] == docs.long()[:, None, None, :]


def check(variant_text, q, k, v, expected_fn, captures, causal=False, kv_lengths=None,
          tolerance=F32_TOLERANCE, zero_rows=None):
    """Output and dq, dk, dv of the op against float64 autograd through expected_fn(q, k, v)."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    for poisoned in (q.grad, k.grad, v.grad):
        assert poisoned is None
    out = attn.attention(q, k, v, variant_text, is_causal=causal, kv_lengths=kv_lengths,
                         captures=captures)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    expected = expected_fn(q64, k64, v64)
    want = torch.autograd.grad(expected, (q64, k64, v64), grad.double())
    for name, actual, wanted in [("out", out, expected), *zip(("dq", "dk", "dv"), got, want)]:
        assert torch.isfinite(actual).all(), f"{name} is not finite"
        error = reference.relative_error(actual, wanted)
        assert error < tolerance, f"{name}: relative error {error:.3g}"
    if zero_rows is not None:
        b, rows = zero_rows
        assert out[b, :, rows].abs().max() == 0, "a row with no allowed key gives 0"
    return out


# --- numerics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("normalizer", list(NORMALIZERS))
@pytest.mark.parametrize("documents", [
    [[10, 20, 7], [3, 34]],                # unequal documents, different per batch
    [[1], [1]],                            # length 1
    [[65, 1, 130, 3], [100, 99]],          # documents across several key blocks
])
def test_document_mask_from_document_ids(normalizer, documents):
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    docs = document_ids(documents)
    batch, length = docs.shape
    q, k, v = qkv(batch, 4, length, kv_heads=2, seed=length)
    text = variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK, normalizer=attribute,
                   body=body)
    keep = same_document(docs)
    check(text, q, k, v,
          lambda q, k, v: reference.attention_general(
              q, k, v, normalizer=reference_normalizer,
              score_mod=lambda s, b, h, i, j: (s, keep)),
          captures=[docs])


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
@pytest.mark.parametrize("length", [1, 37, 150])
def test_relative_position_bias_table(normalizer, length):
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    heads = 3
    q, k, v = qkv(2, heads, length, seed=length + 1)
    table = torch.randn(heads, 2 * length - 1)
    text = variant([("table", "tensor<?x?xf32>")], score_mod=relative_bias(length - 1),
                   normalizer=attribute, body=body)

    def bias(s, b, h, i, j):
        return s + table.double()[h, i - j + length - 1], None

    check(text, q, k, v,
          lambda q, k, v: reference.attention_general(q, k, v, normalizer=reference_normalizer,
                                                      score_mod=bias),
          captures=[table])


@pytest.mark.parametrize("normalizer", list(NORMALIZERS))
def test_alibi_slopes_per_head(normalizer):
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    heads, length = 4, 45
    q, k, v = qkv(2, heads, length, kv_heads=1, seed=5)
    slopes = torch.exp2(-torch.arange(1, heads + 1, dtype=torch.float32))
    text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI, normalizer=attribute,
                   body=body)

    def alibi(s, b, h, i, j):
        return s - slopes.double()[h] * (i - j), None

    check(text, q, k, v,
          lambda q, k, v: reference.attention_general(q, k, v, normalizer=reference_normalizer,
                                                      causal=True, score_mod=alibi),
          captures=[slopes], causal=True)


@pytest.mark.parametrize("normalizer", list(NORMALIZERS))
def test_mask_and_score_mod_reading_captures_with_kv_lengths(normalizer):
    """A document mask and a bias table together, in a padded ragged batch whose kv_lengths cut
    batch 0's last document off entirely: its queries see no key (rows of 0, no NaN)."""
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    documents = [[10, 20, 7], [3, 30, 4]]
    lengths = [30, 33]  # batch 0 loses document 2 (queries 30..36), batch 1 its last 4 keys
    docs = document_ids(documents)
    batch, length = docs.shape
    heads = 2
    q, k, v = qkv(batch, heads, length, seed=7)
    table = torch.randn(heads, 2 * length - 1)
    # Arguments in another order than the operands: the call passes (table, docs).
    text = variant([("docs", "tensor<?x?xi32>"), ("table", "tensor<?x?xf32>")],
                   mask=DOCUMENT_MASK, score_mod=relative_bias(length - 1),
                   normalizer=attribute, body=body, kv_lengths=True,
                   argument_order=["table", "docs"])
    keep = same_document(docs)

    def mod(s, b, h, i, j):
        return s + table.double()[h, i - j + length - 1], keep

    check(text, q, k, v,
          lambda q, k, v: reference.attention_general(q, k, v, normalizer=reference_normalizer,
                                                      score_mod=mod, kv_lengths=lengths),
          captures=[table, docs], kv_lengths=torch.tensor(lengths),
          zero_rows=(0, slice(30, 37)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_captures_with_other_input_dtypes(dtype):
    docs = document_ids([[40, 3, 90], [133]])
    q, k, v = (t.to(dtype) for t in qkv(2, 2, 133, seed=13))
    table = torch.randn(2, 2 * 133 - 1)
    text = variant([("docs", "tensor<?x?xi32>"), ("table", "tensor<?x?xf32>")],
                   mask=DOCUMENT_MASK, score_mod=relative_bias(132))
    keep = same_document(docs)

    def mod(s, b, h, i, j):
        return s + table.double()[h, i - j + 132], keep

    tolerance = F32_TOLERANCE if dtype == torch.float64 else 1e-2
    out = check(text, q, k, v, lambda q, k, v: reference.attention_general(q, k, v, score_mod=mod),
                captures=[docs, table], tolerance=tolerance)
    assert out.dtype == dtype


def test_captures_take_any_integer_and_floating_dtype():
    """i32 captures take any integer or bool tensor, f32 captures any floating one (converted);
    non-contiguous tensors are made contiguous."""
    docs = document_ids([[5, 6], [11]])
    q, k, v = qkv(2, 2, 11, seed=9)
    table = torch.randn(21, 2).t()  # [2, 21], not contiguous
    text = variant([("docs", "tensor<?x?xi32>"), ("table", "tensor<?x?xf32>")],
                   mask=DOCUMENT_MASK, score_mod=relative_bias(10))
    want = attn.attention(q, k, v, text, captures=[docs, table.contiguous()])
    for docs_as in (docs.long(), docs.to(torch.int16), docs.to(torch.uint8)):
        for table_as in (table, table.double()):
            got = attn.attention(q, k, v, text, captures=(docs_as, table_as))
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(attn.attention(q, k, v, text, captures=[docs, table.half()]),
                               attn.attention(q, k, v, text, captures=[docs, table.half().float()]),
                               rtol=0, atol=0)
    # A bool capture into an i32 one: the mask keeps keys whose flag equals the query's.
    flags = torch.rand(2, 11) > 0.5
    got = attn.attention(q, k, v, text, captures=[flags, table])
    torch.testing.assert_close(got, attn.attention(q, k, v, text, captures=[flags.int(), table]),
                               rtol=0, atol=0)


def test_i64_capture_and_rank_three():
    """A [B, H, S] i64 capture (a per-head document split) read at (b, h, i) and (b, h, j)."""
    batch, heads, length = 2, 3, 29
    ids = torch.randint(0, 3, (batch, heads, length)).sort(-1).values
    mask = """
    %di = tensor.extract %ids_[%b, %h, %i] : tensor<?x?x?xi64>
    %dj = tensor.extract %ids_[%b, %h, %j] : tensor<?x?x?xi64>
    %same = arith.cmpi eq, %di, %dj : i64
    attn.yield %same : i1"""
    text = variant([("ids", "tensor<?x?x?xi64>")], mask=mask)
    q, k, v = qkv(batch, heads, length, seed=11)
    keep = ids[:, :, :, None] == ids[:, :, None, :]
    check(text, q, k, v,
          lambda q, k, v: reference.attention_general(
              q, k, v, score_mod=lambda s, b, h, i, j: (s, keep)),
          captures=[ids.int()])


def test_new_capture_sizes_reuse_the_kernels():
    """Capture sizes are run-time arguments: other sizes give the right answer (cache key: the
    count, ranks and element kinds only)."""
    text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI)
    for heads in (1, 2, 8):
        q, k, v = qkv(1, heads, 19, seed=heads)
        slopes = torch.rand(heads)
        got = attn.attention(q, k, v, text, captures=[slopes])
        expected = reference.attention_general(
            q, k, v, score_mod=lambda s, b, h, i, j: (s - slopes.double()[h] * (i - j), None))
        assert reference.relative_error(got, expected) < F32_TOLERANCE


# --- errors ------------------------------------------------------------------------------------

def test_a_read_outside_a_capture_raises_instead_of_returning():
    length = 37
    q, k, v = qkv(1, 2, length, seed=2)
    text = variant([("table", "tensor<?x?xf32>")], score_mod=relative_bias(length - 1))
    short = torch.randn(2, 2 * length - 3)  # misses the two largest distances
    with pytest.raises(RuntimeError, match=r"indexed outside capture 0 .*tensor<\?x\?xf32>.*"
                                           r"of shape \[2, 71\]"):
        attn.attention(q, k, v, text, captures=[short])
    # The same for heads: a table with fewer rows than heads.
    with pytest.raises(RuntimeError, match=r"outside capture 0 .*\[1, 73\]"):
        attn.attention(q, k, v, text, captures=[torch.randn(1, 2 * length - 1)])
    # An empty capture has nothing to read.
    with pytest.raises(RuntimeError, match=r"outside capture 0 .*\[2, 0\]"):
        attn.attention(q, k, v, text, captures=[torch.randn(2, 0)])
    # Fault flags are per call: a good call afterwards runs.
    attn.attention(q, k, v, text, captures=[torch.randn(2, 2 * length - 1)])


def test_the_backward_kernels_check_their_reads_too():
    length = 21
    q, k, v = qkv(1, 2, length, seed=3)
    text = variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK)
    docs = document_ids([[10, 11]])
    out, lse = torch.ops.attn._attention_forward(q, k, v, text, None, False, None, [docs])
    with pytest.raises(RuntimeError, match=r"outside capture 0 .*\[1, 20\]"):
        torch.ops.attn._attention_backward(torch.randn_like(out), q, k, v, out, lse, text, None,
                                           False, None, [docs[:, :20]])


def test_sizes_written_in_the_ir_are_checked():
    q, k, v = qkv(2, 4, 7, seed=4)
    text = variant([("table", "tensor<4x13xf32>")], score_mod=relative_bias(6).replace(
        "tensor<?x?xf32>", "tensor<4x13xf32>"))
    attn.attention(q, k, v, text, captures=[torch.randn(4, 13)])
    with pytest.raises(RuntimeError, match=r"capture 0 has shape \[4, 7\] but the variant "
                                           r"declares tensor<4x13xf32>"):
        attn.attention(q, k, v, text, captures=[torch.randn(4, 7)])


def test_count_rank_and_kind_errors_name_the_capture():
    q, k, v = qkv(1, 2, 9, seed=6)
    text = variant([("docs", "tensor<?x?xi32>")], mask=DOCUMENT_MASK)
    docs = document_ids([[4, 5]])
    with pytest.raises(RuntimeError, match=r"reads 1 captured tensor \(tensor<\?x\?xi32>\) but "
                                           r"the call passes 0"):
        attn.attention(q, k, v, text)
    with pytest.raises(RuntimeError, match="reads 1 captured tensor .* but the call passes 2"):
        attn.attention(q, k, v, text, captures=[docs, docs])
    with pytest.raises(RuntimeError, match=r"capture 0 \(argument 3 of @f\) is tensor<\?x\?xi32> "
                                           r"in the variant IR, but the call passes a Float "
                                           r"tensor of shape \[1, 9\]: an integer capture"):
        attn.attention(q, k, v, text, captures=[docs.float()])
    with pytest.raises(RuntimeError, match=r"the ranks differ \(2 vs 1\)"):
        attn.attention(q, k, v, text, captures=[docs[0]])
    slopes_text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI)
    with pytest.raises(RuntimeError, match="an f32 capture takes a floating tensor"):
        attn.attention(q, k, v, slopes_text, captures=[torch.ones(2, dtype=torch.int64)])
    with pytest.raises(RuntimeError, match="must be a floating, integer or bool tensor"):
        attn.attention(q, k, v, slopes_text, captures=[torch.ones(2, dtype=torch.complex64)])
    with pytest.raises(RuntimeError, match=r"variant 'softmax' reads no captured tensors, but "
                                           r"the call passes 1"):
        attn.attention(q, k, v, "softmax", captures=[docs])
    plain = variant([], dim=32)
    with pytest.raises(RuntimeError, match="reads 0 captured tensors but the call passes 1"):
        attn.attention(q, k, v, plain, captures=[docs])


def test_device_errors_and_detached_captures():
    q, k, v = qkv(1, 2, 9, seed=8)
    text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI)
    with pytest.raises(RuntimeError, match="capture 0 must be on q's device cpu, got meta"):
        attn.attention(q, k, v, text, captures=[torch.ones(2, device="meta")])
    slopes = torch.ones(2, requires_grad=True)
    # Detached, or without grad mode, it runs (and q, k, v still get gradients).
    q.requires_grad_()
    out = attn.attention(q, k, v, text, captures=[slopes.detach()])
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    with torch.no_grad():
        attn.attention(q, k, v, text, captures=[slopes])


def test_meta_tensors_accept_captures():
    q = torch.empty(2, 4, 9, 16, device="meta")
    docs = torch.empty(2, 9, dtype=torch.int32, device="meta")
    out = torch.ops.attn.attention(q, q, q, "mlir:unused", None, False, None, [docs])
    assert out.shape == (2, 4, 9, 16) and out.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_reads_captures_checks_reads_and_derives_their_gradients():
    q, k, v = (t.cuda().bfloat16() for t in qkv(2, 4, 70, seed=9))
    slopes = torch.rand(4) + 0.1
    text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI)
    expected = reference.attention_general(q.cpu(), k.cpu(), v.cpu(), score_mod=lambda s, b, h, i, j:
                                           (s - slopes.double()[h] * (i - j), None))
    out = attn.attention(q, k, v, text, captures=[slopes.cuda()])
    assert reference.relative_error(out.cpu().double(), expected) < 1e-2
    with pytest.raises(RuntimeError, match="outside capture 0"):
        attn.attention(q, k, v, text, captures=[slopes[:3].cuda()])
    # The slopes' gradient (summed over the warp, one atomic add per warp and key block)
    # against the CPU kernels' on the same inputs in float32.
    cuda_inputs = [t.detach().requires_grad_() for t in (q, k, v)]
    cuda_slopes = slopes.cuda().requires_grad_()
    attn.attention(*cuda_inputs, text, captures=[cuda_slopes]).float().square().sum().backward()
    cpu_inputs = [t.detach().cpu().float().requires_grad_() for t in (q, k, v)]
    cpu_slopes = slopes.clone().requires_grad_()
    attn.attention(*cpu_inputs, text, captures=[cpu_slopes]).square().sum().backward()
    assert reference.relative_error(cuda_slopes.grad.cpu().double(),
                                    cpu_slopes.grad.double()) < 3e-2


def many_captures(count):
    """A score_mod adding c_n[h] of `count` [H] captures: s + sum_n c_n[h]."""
    captures = [(f"c{n}", "tensor<?xf32>") for n in range(count)]
    lines, total = [], "%s"
    for n in range(count):
        lines.append(f"    %x{n} = tensor.extract %c{n}_[%h] : tensor<?xf32>")
        lines.append(f"    %t{n} = arith.addf {total}, %x{n} : f32")
        total = f"%t{n}"
    lines.append(f"    attn.yield {total} : f32")
    return variant(captures, score_mod="\n".join(lines))


def test_the_most_captures_the_kernels_take():
    """23 captures: the dK/dV kernel takes 32 memref arguments, the most (kMaxKernelPointers)."""
    heads = 2
    q, k, v = qkv(1, heads, 13, seed=12)
    captures = [torch.randn(heads) for _ in range(23)]
    total = torch.stack(captures).sum(0).double()
    check(many_captures(23), q, k, v,
          lambda q, k, v: reference.attention_general(
              q, k, v, score_mod=lambda s, b, h, i, j: (s + total[h], None)),
          captures=captures)


def test_too_many_captures_is_a_clear_error():
    q, k, v = qkv(1, 1, 3)
    with pytest.raises(RuntimeError, match="24 captured tensors are more than the CPU kernels "
                                           "take"):
        attn.attention(q, k, v, many_captures(24), captures=[torch.ones(1)] * 24)


# --- gradients of captured tensors -------------------------------------------------------------

def check_capture_gradients(variant_text, q, k, v, captures, expected_fn, causal=False,
                            kv_lengths=None, tolerance=F32_TOLERANCE):
    """Output and the gradients of q, k, v and of every floating capture that requires grad,
    against float64 autograd through expected_fn(q, k, v, captures64)."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    learnable = [c for c in captures if c.requires_grad]
    out = attn.attention(q, k, v, variant_text, is_causal=causal, kv_lengths=kv_lengths,
                         captures=captures)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, *learnable), grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    captures64 = [c.detach().double().requires_grad_(c.requires_grad)
                  if c.is_floating_point() else c for c in captures]
    expected = expected_fn(q64, k64, v64, captures64)
    learnable64 = [c for c in captures64 if c.is_floating_point() and c.requires_grad]
    want = torch.autograd.grad(expected, (q64, k64, v64, *learnable64), grad.double())
    names = ["dq", "dk", "dv"] + [f"dcapture{n}" for n in range(len(learnable))]
    for name, actual, wanted in [("out", out, expected), *zip(names, got, want)]:
        assert actual.shape == wanted.shape, f"{name}: shape {actual.shape} != {wanted.shape}"
        assert torch.isfinite(actual).all(), f"{name} is not finite"
        error = reference.relative_error(actual, wanted)
        assert error < tolerance, f"{name}: relative error {error:.3g}"


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid", "relu", "custom"])
@pytest.mark.parametrize("length", [1, 37, 150])
def test_learnable_relative_position_table(normalizer, length):
    """d table: every score adds to the entry its distance reads (indices vary over the keys:
    the kernels scatter lane by lane, and lanes of one row may hit one entry)."""
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    heads = 3
    q, k, v = qkv(2, heads, length, seed=length + 11)
    table = torch.randn(heads, 2 * length - 1).requires_grad_()
    text = variant([("table", "tensor<?x?xf32>")], score_mod=relative_bias(length - 1),
                   normalizer=attribute, body=body)

    def expected(q, k, v, captures):
        table64, = captures
        return reference.attention_general(
            q, k, v, normalizer=reference_normalizer,
            score_mod=lambda s, b, h, i, j: (s + table64[h, i - j + length - 1], None))

    check_capture_gradients(text, q, k, v, [table], expected)


@pytest.mark.parametrize("normalizer", list(NORMALIZERS))
@pytest.mark.parametrize("causal", [False, True])
def test_learnable_alibi_slopes(normalizer, causal):
    """d slopes: a per-head slope is read at a uniform index per row (one sum per row), with
    GQA (4 query heads on 1 key/value head) and odd lengths."""
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    heads, length = 4, 45
    q, k, v = qkv(2, heads, length, kv_heads=1, seed=5)
    slopes = torch.exp2(-torch.arange(1, heads + 1, dtype=torch.float32)).requires_grad_()
    text = variant([("slopes", "tensor<?xf32>")], score_mod=ALIBI, normalizer=attribute,
                   body=body)

    def expected(q, k, v, captures):
        slopes64, = captures
        return reference.attention_general(
            q, k, v, normalizer=reference_normalizer, causal=causal,
            score_mod=lambda s, b, h, i, j: (s - slopes64[h] * (i - j), None))

    check_capture_gradients(text, q, k, v, [slopes], expected, causal=causal)


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_learnable_table_under_a_document_mask_with_kv_lengths(normalizer):
    """Masked scores (other documents, keys past kv_lengths, a whole cut-off document) add
    nothing to the table's gradient; the integer ids capture has no gradient."""
    attribute, body, reference_normalizer = NORMALIZERS[normalizer]
    documents = [[10, 20, 7], [3, 30, 4]]
    lengths = [30, 33]
    docs = document_ids(documents)
    batch, length = docs.shape
    heads = 2
    q, k, v = qkv(batch, heads, length, seed=17)
    table = torch.randn(heads, 2 * length - 1).requires_grad_()
    text = variant([("docs", "tensor<?x?xi32>"), ("table", "tensor<?x?xf32>")],
                   mask=DOCUMENT_MASK, score_mod=relative_bias(length - 1),
                   normalizer=attribute, body=body, kv_lengths=True)
    keep = same_document(docs)

    def expected(q, k, v, captures):
        _, table64 = captures
        return reference.attention_general(
            q, k, v, normalizer=reference_normalizer, kv_lengths=lengths,
            score_mod=lambda s, b, h, i, j: (s + table64[h, i - j + length - 1], keep))

    check_capture_gradients(text, q, k, v, [docs, table], expected,
                            kv_lengths=torch.tensor(lengths))


def test_only_the_captures_that_require_grad_get_one():
    """Two tables, one learnable: the other gets no gradient, and a backward where none
    requires grad runs the kernels without capture gradients."""
    heads, length = 2, 21
    q, k, v = qkv(1, heads, length, seed=3)
    learnable = torch.randn(heads, 2 * length - 1).requires_grad_()
    fixed = torch.randn(heads, 2 * length - 1)
    score_mod = f"""
    %reach = arith.constant {length - 1} : index
    %d = arith.subi %i, %j : index
    %index = arith.addi %d, %reach : index
    %x = tensor.extract %a_[%h, %index] : tensor<?x?xf32>
    %y = tensor.extract %c_[%h, %index] : tensor<?x?xf32>
    %xy = arith.mulf %x, %y : f32
    %r = arith.addf %s, %xy : f32
    attn.yield %r : f32"""
    text = variant([("a", "tensor<?x?xf32>"), ("c", "tensor<?x?xf32>")], score_mod=score_mod)

    def expected(q, k, v, captures):
        a, c = captures
        return reference.attention_general(
            q, k, v, score_mod=lambda s, b, h, i, j: (
                s + a[h, i - j + length - 1] * c[h, i - j + length - 1], None))

    check_capture_gradients(text, q, k, v, [learnable, fixed], expected)
    out = attn.attention(*(t.requires_grad_() for t in (q, k, v)), text,
                         captures=[learnable.detach(), fixed])
    out.sum().backward()
    assert q.grad is not None


@pytest.mark.parametrize("bias_type,shape", [
    ("tensor<?x?x?x?xf32>", (2, 3, 29, 29)),   # a full bias: every score its own entry
    ("tensor<1x?x?x?xf32>", (1, 3, 29, 29)),   # broadcast over the batch
    ("tensor<?x1x?x?xf32>", (2, 1, 29, 29)),   # broadcast over the heads
])
def test_bias_operand_and_its_gradient(bias_type, shape):
    """An IR `bias` operand is passed as a capture (at its function argument's position) and
    gets its gradient, summed over the dimensions it broadcasts."""
    t = "tensor<?x?x?x32xf32>"
    text = ("mlir:func.func @f(%q: " + t + ", %k: " + t + ", %v: " + t + ", %bias: " + bias_type
            + ") -> " + t + " {\n  %o = attn.attention %q, %k, %v bias(%bias : " + bias_type
            + ") normalizer(#attn.softmax) : " + t + ", " + t + ", " + t + " -> " + t
            + "\n  return %o : " + t + "\n}")
    q, k, v = qkv(2, 3, 29, seed=23)
    bias = torch.randn(shape).requires_grad_()

    def expected(q, k, v, captures):
        bias64, = captures
        return reference.attention_general(
            q, k, v, score_mod=lambda s, b, h, i, j: (s + bias64, None))

    check_capture_gradients(text, q, k, v, [bias], expected)


def test_bias_operand_with_a_broadcast_shape_mismatch_is_an_error():
    t = "tensor<?x?x?x32xf32>"
    bias_type = "tensor<?x1x?x?xf32>"
    text = ("mlir:func.func @f(%q: " + t + ", %k: " + t + ", %v: " + t + ", %bias: " + bias_type
            + ") -> " + t + " {\n  %o = attn.attention %q, %k, %v bias(%bias : " + bias_type
            + ") normalizer(#attn.softmax) : " + t + ", " + t + ", " + t + " -> " + t
            + "\n  return %o : " + t + "\n}")
    q, k, v = qkv(2, 3, 9)
    with pytest.raises(RuntimeError, match=r"capture 0 has shape \[2, 3, 9, 9\] but the variant "
                                           r"declares tensor<\?x1x\?x\?xf32>"):
        attn.attention(q, k, v, text, captures=[torch.randn(2, 3, 9, 9)])
