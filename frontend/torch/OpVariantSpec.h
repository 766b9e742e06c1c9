// The kernel variant a torch-op call selects: what the attention ops (padded and packed) share
// between their CPU, CUDA and autograd kernels.
#ifndef FRONTEND_TORCH_OPVARIANTSPEC_H
#define FRONTEND_TORCH_OPVARIANTSPEC_H

#include "runtime/CpuKernels.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>

namespace attn::torchop {

/// The schemas' `Tensor[]? captures=None` (a tensor list cannot default to []): none given and
/// an empty list mean the same.
using OptionalTensorList = c10::optional<at::TensorList>;

inline at::TensorList capturesOf(const OptionalTensorList &captures) {
  return captures ? *captures : at::TensorList();
}

/// The variant of a call whose q has head dim `headDim` and dtype `dtype` and whose v has head
/// dim `valueHeadDim`; the captures' ranks and element kinds are part of it, their sizes not.
runtime::VariantSpec makeVariantSpec(int64_t headDim, int64_t valueHeadDim, at::ScalarType dtype,
                                     std::string variant, c10::optional<double> scale,
                                     bool causal, bool keyLengths, at::TensorList captures,
                                     bool captureGradients = false);

} // namespace attn::torchop

#endif // FRONTEND_TORCH_OPVARIANTSPEC_H
