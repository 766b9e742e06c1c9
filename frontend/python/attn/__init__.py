"""attn: attention compiled from an MLIR dialect, as torch ops.

``attn.attention(q, k, v, variant="softmax", scale=None, is_causal=False, kv_lengths=None,
captures=())`` runs the attention the
variant names (``softmax``, ``sigmoid``, ``sigmoid(bias=-3.5)``, ``relu``, ``relu(scale=0.01)``, any
normalizer the dialect defines, or ``mlir:`` followed by a module holding an ``attn.attention``,
whose batch, head and sequence sizes are only an example), JIT-compiled for the tensors'
device and cached. ``attn.reparam_linear`` is the σReparam linear; ``attn.nn`` holds modules.
Both ops have autograd and fake (meta) kernels, so they work under ``torch.compile``.
"""
from typing import Optional, Sequence

import torch

from attn._version import __version__
from attn import _loader

library_path = _loader.load()

__all__ = ["__version__", "attention", "attention_varlen", "wait_for_compiles", "reparam_linear", "reparam_qkv_attention",
           "library_path", "nn"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str = "softmax",
              scale: Optional[float] = None, is_causal: bool = False,
              kv_lengths: Optional[torch.Tensor] = None,
              captures: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv], Hq a multiple of Hkv (GQA)
    → [B, Hq, Sq, Dv] in q's dtype. ``scale`` multiplies q·kᵀ (default: the variant's own, else
    1/sqrt(D)); ``is_causal`` masks key j > query i (top-left aligned, as SDPA);
    ``kv_lengths`` ([B] integers) lets batch b attend only to its first ``kv_lengths[b]`` keys, so
    a ragged batch padded to its longest sequence runs in one call (padding keys get zero
    gradients). A query row with no allowed key gives 0. Float32, bfloat16, float16 and float64
    on CPU; CUDA where built.

    ``captures``: the tensors an ``mlir:`` variant's ``score_mod`` and ``mask`` regions read with
    ``tensor.extract`` (its ``attn.attention ... captures(%docs, %table : ...)``), one per
    function argument that feeds them, in the function's argument order: a document id per
    token [B, S], a relative-position bias table [H, 2S-1], per-head ALiBi slopes [H], ... Any
    rank; an ``f32`` capture takes a floating tensor, an ``i32``/``i64`` capture an integer or
    bool tensor (converted, made contiguous); on q's device (CPU only for now). Sizes written
    in the IR are checked; ``?`` sizes take any. A region that indexes outside a capture raises
    an error naming it (never a clamped result). A floating capture that requires grad gets its
    gradient (a learnable bias table or ALiBi slopes); an IR ``bias`` operand is passed as a
    capture at its argument's position."""
    return torch.ops.attn.attention(q, k, v, variant, scale, is_causal, kv_lengths,
                                    list(captures))


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                     variant: str = "softmax", scale: Optional[float] = None,
                     is_causal: bool = False,
                     captures: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Attention over packed sequences, as FlashAttention's varlen interface: q [Tq, Hq, D],
    k [Tk, Hkv, D], v [Tk, Hkv, Dv] hold the sequences one after another, and the cumulative
    offsets ``cu_seqlens_q``, ``cu_seqlens_k`` ([N + 1] integers, from 0 to Tq and Tk) say where
    each starts: sequence s is q[cu_seqlens_q[s]:cu_seqlens_q[s+1]] attending to its own keys
    k[cu_seqlens_k[s]:cu_seqlens_k[s+1]], so a batch of different query and key lengths runs in
    one call with no padding at all. → [Tq, Hq, Dv] in q's dtype, with gradients for q, k, v and
    floating captures. ``is_causal`` masks key j > query i within each sequence (top-left, as
    ``attention``); a sequence without keys gives zero rows. ``variant``, ``scale`` and
    ``captures`` as in ``attention``; score_mod and mask regions see b = s and positions counted
    from the sequence's start. CPU only (on CUDA, pad and use ``attention`` with ``kv_lengths``)."""
    return torch.ops.attn.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, variant, scale,
                                           is_causal, list(captures))


def wait_for_compiles() -> None:
    """Blocks until the JIT's background compiles are done. A variant's first call runs code
    compiled quickly (LLVM -O0) while its optimized object compiles on a background thread and
    then replaces it (``ATTN_TIERED_COMPILE=0`` compiles the optimized object up front instead):
    a benchmark calls this after its warm-up, so that it times the code a long run gets."""
    torch.ops.attn.wait_for_compiles()


def reparam_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   gamma: torch.Tensor, u: torch.Tensor, training: bool) -> torch.Tensor:
    """σReparam (arXiv:2303.06296): y = x·(γ/σ(W)·W)ᵀ + b, σ by one power-iteration step from
    ``u`` [in]. In training, ``u`` is updated in place; in eval, it is read only."""
    return torch.ops.attn.reparam_linear(x, weight, bias, gamma, u, training)


def reparam_qkv_attention(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          gamma: torch.Tensor, u: torch.Tensor, training: bool, heads: int,
                          kv_heads: int = 0, variant: str = "softmax",
                          scale: Optional[float] = None,
                          is_causal: bool = False) -> torch.Tensor:
    """A σReparam QKV projection feeding ``attention`` as one compiled block (CPU, float32):
    x [B, S, E] → [B, heads, S, D], with q, k, v the projection's [(heads + 2·kv_heads)·D]
    features (query heads, then key heads, then value heads) read in place, never copied, and
    their gradients written into one buffer that the σReparam backward reads. ``u`` as in
    ``reparam_linear``; ``kv_heads`` 0 means ``heads``. The result's transpose(1, 2) is
    contiguous [B, S, heads, D]."""
    return torch.ops.attn.reparam_qkv_attention(x, weight, bias, gamma, u, training, heads,
                                                kv_heads, variant, scale, is_causal)


from attn import nn  # noqa: E402  (the modules use the functions above)
