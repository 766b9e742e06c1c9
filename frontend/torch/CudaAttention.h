// The tensor-level CUDA forward and backward of attn::attention: JIT-compiled PTX kernels
// (runtime/GpuKernels.h) launched on torch's current stream of the tensors' device. Built only
// against a LibTorch with CUDA (ATTN_TORCH_CUDA).
#ifndef FRONTEND_TORCH_CUDAATTENTION_H
#define FRONTEND_TORCH_CUDAATTENTION_H

#include "frontend/torch/CpuAttention.h"

namespace attn::torchop {

/// q, k, v on one CUDA device. The kernels compute in bfloat16 or float16 with float32
/// accumulators; float32/float64 inputs run in bfloat16 (warned once). `out` is in the compute
/// dtype, `lse` float32.
AttentionForward cudaAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                      const at::Tensor &k, const at::Tensor &v,
                                      const c10::optional<at::Tensor> &kvLengths = c10::nullopt);

/// Gradients in the compute dtype; `out` and `lse` are cudaAttentionForward's.
AttentionGradients cudaAttentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                         const at::Tensor &k, const at::Tensor &v,
                                         const at::Tensor &out, const at::Tensor &lse,
                                         const at::Tensor &gradOut,
                                         const c10::optional<at::Tensor> &kvLengths = c10::nullopt);

} // namespace attn::torchop

#endif // FRONTEND_TORCH_CUDAATTENTION_H
