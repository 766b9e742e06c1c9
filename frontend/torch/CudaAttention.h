// The tensor-level CUDA forward and backward of attn::attention: JIT-compiled PTX kernels
// (runtime/GpuKernels.h) launched on torch's current stream of the tensors' device. Built only
// against a LibTorch with CUDA (ATTN_TORCH_CUDA).
#ifndef FRONTEND_TORCH_CUDAATTENTION_H
#define FRONTEND_TORCH_CUDAATTENTION_H

#include "frontend/torch/CpuAttention.h"

namespace attn::torchop {

/// q, k, v on one CUDA device. The kernels compute in bfloat16 or float16 with float32
/// accumulators; float32/float64 inputs run in bfloat16 (warned once). `out` is in the compute
/// dtype, `lse` float32. `captures` (one per spec.captures, on q's device) are converted to the
/// element types the variant's IR declares and made contiguous; a call with captures waits for
/// its stream to read their fault flags back, and a region that read outside one makes the
/// call an error (c10::Error naming the capture), never a result.
AttentionForward cudaAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                      const at::Tensor &k, const at::Tensor &v,
                                      const c10::optional<at::Tensor> &kvLengths = c10::nullopt,
                                      at::TensorList captures = {});

/// Gradients in the compute dtype; `out` and `lse` are cudaAttentionForward's. The GPU kernels
/// do not compute gradients of captures: spec.captureGradients is an error (c10::Error).
AttentionGradients cudaAttentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                         const at::Tensor &k, const at::Tensor &v,
                                         const at::Tensor &out, const at::Tensor &lse,
                                         const at::Tensor &gradOut,
                                         const c10::optional<at::Tensor> &kvLengths = c10::nullopt,
                                         at::TensorList captures = {});

} // namespace attn::torchop

#endif // FRONTEND_TORCH_CUDAATTENTION_H
