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
    """σReparam in float64; returns (y, u after the call)."""
    normalize = torch.nn.functional.normalize
    x, weight, gamma, u = x.double(), weight.double(), gamma.double(), u.double()
    v = normalize(weight @ u, dim=0)
    if training:
        u = normalize(weight.t() @ v, dim=0)
    sigma = torch.dot(v, weight @ u)
    y = x @ (gamma / sigma * weight).t()
    if bias is not None:
        y = y + bias.double()
    return y, u
