// The C++ entry point of the torch op attn::reparam_qkv_attention: a σReparam QKV projection
// feeding attn::attention as one compiled block (attn-fuse-reparam-attention), so q, k and v
// are strided views of the projection's output and dQ, dK, dV are written into one gradient
// buffer that the σReparam backward reads as it is. Linking libattn_torch registers the op.
#ifndef FRONTEND_TORCH_REPARAMATTENTION_H
#define FRONTEND_TORCH_REPARAMATTENTION_H

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>

namespace attn {

/// x [B, S, E] → attention of q, k, v = split(x·(γ/σ·W)ᵀ + b) → [B, Hq, S, D], where the
/// projection's [(Hq + 2 Hkv)·D] features are the Hq query heads, then the Hkv key heads,
/// then the Hkv value heads (the models' fused_qkv layout), σ as attn::reparam_linear (power
/// step taken in both modes, u ← u' in training). `kvHeads` 0 means `heads`. The result is a
/// [B, S, Hq, D]-contiguous tensor seen as [B, Hq, S, D] (its transpose(1, 2) is contiguous).
/// CPU, float32. Throws c10::Error on bad arguments.
at::Tensor reparam_qkv_attention(const at::Tensor &x, const at::Tensor &weight,
                                 const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                                 at::Tensor &u, bool training, int64_t heads,
                                 int64_t kvHeads = 0, const std::string &variant = "softmax",
                                 c10::optional<double> scale = c10::nullopt,
                                 bool isCausal = false);

} // namespace attn

#endif // FRONTEND_TORCH_REPARAMATTENTION_H
