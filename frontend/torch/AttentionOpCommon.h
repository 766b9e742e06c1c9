// What the attention ops (attn::attention, padded, and attn::attention_varlen, packed) share
// between their CPU, CUDA, Meta and autograd kernels: the variant a call selects and the
// handling of captured tensors' gradients.
#ifndef FRONTEND_TORCH_ATTENTIONOPCOMMON_H
#define FRONTEND_TORCH_ATTENTIONOPCOMMON_H

#include "runtime/CpuKernels.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <torch/csrc/autograd/variable.h>

#include <string>
#include <vector>

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

/// Whether the backward must derive captures' gradients: a floating capture requires grad (an
/// integer capture never has one).
bool anyCaptureRequiresGrad(at::TensorList captures);

/// The backward op's capture gradients from the kernels' (one per capture, undefined for
/// integer ones): the defined ones, in their captures' dtypes, in capture order.
std::vector<at::Tensor> captureGradientsInDtypes(const std::vector<at::Tensor> &gradients,
                                                 at::TensorList captures);

/// The backward Meta kernel's capture gradients: one per floating capture when asked for.
std::vector<at::Tensor> captureGradientsMeta(at::TensorList captures, bool captureGradients);

/// An autograd Function's gradients: dq, dk, dv, none for the next arguments up to
/// `argumentsBeforeCaptures`, then one per capture, `captureGrads` (the backward op's, one per
/// floating capture) in the floating captures' places when `captureGradients`.
torch::autograd::variable_list
autogradGradients(const at::Tensor &dq, const at::Tensor &dk, const at::Tensor &dv,
                  size_t argumentsBeforeCaptures, at::TensorList captures,
                  const std::vector<at::Tensor> &captureGrads, bool captureGradients);

} // namespace attn::torchop

#endif // FRONTEND_TORCH_ATTENTIONOPCOMMON_H
