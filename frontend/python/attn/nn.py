"""torch.nn modules on the attn ops: multi-head ``Attention`` and the σReparam linear."""
import math
from typing import Optional

import torch
from torch import nn

import attn


class SigmaReparamLinear(nn.Module):
    """y = x·(γ/σ(W)·W)ᵀ + b (σReparam, arXiv:2303.06296, as apple/ml-sigma-reparam's SNLinear).

    ``weight`` [out, in] is trunc-normal (std 0.02·init_multiplier); ``u`` [in] starts as the
    weight's top right-singular vector and ``gamma`` as σ(W), so the layer initially applies W
    itself. Each training forward takes one power-iteration step and updates ``u`` in place.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_multiplier: float = 1.0, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.init_multiplier = init_multiplier
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.gamma = nn.Parameter(torch.empty(1, **factory))
        self.register_buffer("u", torch.empty(in_features, **factory))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = 0.02 * self.init_multiplier
        nn.init.trunc_normal_(self.weight, std=std)  # bounds ±2 absolute, as the C++ layer
        if self.bias is not None:
            self.bias.zero_()
        self.reset_spectral_state()

    @torch.no_grad()
    def reset_spectral_state(self) -> None:
        """u = the top right-singular vector of W, γ = σ(W): the layer applies W exactly."""
        _, singular, vh = torch.linalg.svd(self.weight.double(), full_matrices=False)
        self.u.copy_(vh[0])
        self.gamma.fill_(singular[0].item())

    def spectral_norm(self) -> torch.Tensor:
        """σ(W) = ‖W·u‖ for the current u (no update, no gradient)."""
        with torch.no_grad():
            return torch.linalg.vector_norm(self.weight @ self.u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return attn.reparam_linear(x, self.weight, self.bias, self.gamma, self.u, self.training)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Attention(nn.Module):
    """Multi-head (optionally grouped-query) self-attention on ``attn.attention``.

    x [B, S, embed_dim] → [B, S, embed_dim]. ``variant`` names the normalizer (``softmax``,
    ``sigmoid``, ``relu``, parameters, or ``mlir:`` IR); ``sigma_reparam`` makes the projections
    σReparam linears.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: Optional[int] = None,
                 variant: str = "softmax", causal: bool = False, scale: Optional[float] = None,
                 bias: bool = True, sigma_reparam: bool = False, device=None, dtype=None):
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads "
                             f"{num_kv_heads}")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.variant, self.causal, self.scale = variant, causal, scale
        factory = {"device": device, "dtype": dtype}
        linear = SigmaReparamLinear if sigma_reparam else nn.Linear
        qkv_features = (num_heads + 2 * num_kv_heads) * self.head_dim
        self.qkv = linear(embed_dim, qkv_features, bias=bias, **factory)
        self.proj = linear(num_heads * self.head_dim, embed_dim, bias=bias, **factory)

    def _fused(self, x: torch.Tensor) -> bool:
        """σReparam QKV on the CPU in float32: one compiled block (attn.reparam_qkv_attention)."""
        return (isinstance(self.qkv, SigmaReparamLinear) and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.qkv.weight.dtype == torch.float32
                and x.dim() == 3 and x.shape[0] * x.shape[1] > 0
                and not torch.is_autocast_enabled("cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        if self._fused(x):
            out = attn.reparam_qkv_attention(
                x, self.qkv.weight, self.qkv.bias, self.qkv.gamma, self.qkv.u, self.training,
                self.num_heads, self.num_kv_heads, self.variant, self.scale, self.causal)
            return self.proj(out.transpose(1, 2).reshape(batch, length, -1))
        heads = (self.num_heads, self.num_kv_heads, self.num_kv_heads)
        q, k, v = self.qkv(x).split([h * self.head_dim for h in heads], dim=-1)
        q, k, v = (t.reshape(batch, length, h, self.head_dim).transpose(1, 2)
                   for t, h in zip((q, k, v), heads))
        out = attn.attention(q, k, v, self.variant, self.scale, self.causal)
        return self.proj(out.transpose(1, 2).reshape(batch, length, -1))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}, variant={self.variant!r}, "
                f"causal={self.causal}")
