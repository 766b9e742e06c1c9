"""Float64 reference math for the attn ops (plain torch, no attn code)."""
import math

import torch


def attention(q, k, v, normalizer="softmax", causal=False, scale=None):
    """The attention attn.attention computes, in float64. A softmax row with no allowed key
    gives 0 (as FlashAttention and FlexAttention)."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if normalizer == "softmax":
        p = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    elif normalizer == "sigmoid":  # the default bias −ln(Sk)
        p = torch.sigmoid(scores - math.log(k.shape[2])) * allowed
    elif normalizer == "relu":  # the default scale 1/Sk
        p = torch.relu(scores) / k.shape[2] * allowed
    else:
        raise ValueError(normalizer)
    return p @ v


def relative_error(actual, expected):
    expected = expected.double()
    norm = expected.norm()
    difference = (actual.double() - expected).norm()
    return (difference / norm).item() if norm > 0 else difference.item()


def reparam_linear(x, weight, bias, gamma, u, training):
    """σReparam in float64 as apple/ml-sigma-reparam's SpectralNormedWeight: one power step in
    training and eval alike, σ = vᵀ W u'; returns (y, u after the call: u' in training, u in
    eval)."""
    normalize = torch.nn.functional.normalize
    x, weight, gamma, u = x.double(), weight.double(), gamma.double(), u.double()
    with torch.no_grad():  # the power step is not differentiated (as the reference code)
        v = normalize(weight @ u, dim=0)
        stepped = normalize(weight.t() @ v, dim=0)
    sigma = torch.dot(v, weight @ stepped)
    y = x @ (gamma / sigma * weight).t()
    if bias is not None:
        y = y + bias.double()
    return y, (stepped if training else u)


def _allowed_by_attributes(queries, keys, causal, window):
    """[Sq, Sk] bool: `causal` keeps j <= i (top-left); `window = W` keeps i - W <= j, and
    j <= i + W when not causal (the attn.attention attributes)."""
    i = torch.arange(queries).unsqueeze(1)
    j = torch.arange(keys).unsqueeze(0)
    allowed = torch.ones(queries, keys, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= j >= i - window
        if not causal:
            allowed &= j <= i + window
    return allowed


def attention_general(q, k, v, normalizer="softmax", scale=None, causal=False, window=None,
                      score_mod=None, dtype=torch.float64, kv_lengths=None):
    """attn.attention in float64 with everything the dialect can say without extra operands.

    normalizer: "softmax" (row-wise over the allowed keys) or a callable ``f(s, keys) -> p``
    applied elementwise (``keys`` = the run-time key length Sk, for length-dependent defaults
    such as sigmoid's −ln Sk and relu's 1/Sk). score_mod: ``None`` or a callable
    ``(s, b, h, i, j) -> (s', keep)`` on the scaled scores [B, Hq, Sq, Sk] and broadcastable
    index tensors; ``keep`` is a bool tensor (or None) standing for the entries the score_mod
    sends to −inf. Masked entries get p = 0 and carry no gradient; a softmax row with no allowed
    key gives 0. Differentiable (torch.autograd) without NaN, fully masked rows included.
    ``dtype=torch.float32`` computes the same math in float32 (to size rounding effects).
    kv_lengths: ``None`` or B integers: batch b sees its first kv_lengths[b] keys only, and a
    normalizer's ``keys`` is then that length ([B, 1, 1, 1]), as if the batch were unpadded."""
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    batch, heads, queries, dim = q.shape
    keys = k.shape[2]
    groups = heads // k.shape[1] if k.shape[1] else 1
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scale = 1 / math.sqrt(dim) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    allowed = _allowed_by_attributes(queries, keys, causal, window).expand(scores.shape)
    if score_mod is not None:
        b = torch.arange(batch).view(-1, 1, 1, 1)
        h = torch.arange(heads).view(1, -1, 1, 1)
        i = torch.arange(queries).view(1, 1, -1, 1)
        j = torch.arange(keys).view(1, 1, 1, -1)
        scores, keep = score_mod(scores, b, h, i, j)
        if keep is not None:
            allowed = allowed & keep.expand(scores.shape)
    if kv_lengths is not None:
        lengths = torch.as_tensor(list(kv_lengths), dtype=torch.long).view(-1, 1, 1, 1)
        allowed = allowed & (torch.arange(keys).view(1, 1, 1, -1) < lengths)
        keys = lengths.to(dtype)
    # Masked entries are replaced by 0 before the normalizer, so no inf/NaN reaches autograd.
    safe = torch.where(allowed, scores, torch.zeros((), dtype=scores.dtype))
    if normalizer == "softmax" and k.shape[2] == 0:
        p = safe  # [.., Sq, 0]: the output is 0, still a function of q, k and v for autograd
    elif normalizer == "softmax":
        minus_inf = torch.tensor(float("-inf"), dtype=scores.dtype)
        row_max = torch.where(allowed, scores.detach(), minus_inf).amax(-1, keepdim=True)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        weights = torch.exp(torch.where(allowed, scores - row_max, minus_inf))
        total = weights.sum(-1, keepdim=True)
        p = weights / torch.where(total > 0, total, torch.ones_like(total))
    else:
        p = normalizer(safe, keys) * allowed
    return p @ v


def allowed_mask(q, k, causal=False, window=None, score_mod=None):
    """The [B, Hq, Sq, Sk] bool mask attention_general applies (for describing a case)."""
    batch, heads, queries, _ = q.shape
    keys = k.shape[2]
    allowed = _allowed_by_attributes(queries, keys, causal, window).expand(
        batch, heads, queries, keys)
    if score_mod is not None:
        scores = torch.zeros(batch, heads, queries, keys, dtype=torch.float64)
        _, keep = score_mod(scores, torch.arange(batch).view(-1, 1, 1, 1),
                            torch.arange(heads).view(1, -1, 1, 1),
                            torch.arange(queries).view(1, 1, -1, 1),
                            torch.arange(keys).view(1, 1, 1, -1))
        if keep is not None:
            allowed = allowed & keep.expand(allowed.shape)
    return allowed
