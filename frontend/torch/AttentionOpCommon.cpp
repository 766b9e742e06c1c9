#include "frontend/torch/AttentionOpCommon.h"

#include <ATen/ATen.h>

#include <sstream>

namespace attn::torchop {
namespace {

/// What a captured tensor is for the kernels: its rank and element kind, and a description
/// for messages ("an int64 tensor of shape [2, 9]").
runtime::CaptureSignature captureSignature(const at::Tensor &capture) {
  runtime::CaptureSignature signature;
  signature.rank = capture.dim();
  signature.floating = at::isFloatingType(capture.scalar_type());
  std::ostringstream description;
  description << "a " << capture.scalar_type() << " tensor of shape " << capture.sizes();
  signature.description = description.str();
  return signature;
}

} // namespace

runtime::VariantSpec makeVariantSpec(int64_t headDim, int64_t valueHeadDim, at::ScalarType dtype,
                                     std::string variant, c10::optional<double> scale,
                                     bool causal, bool keyLengths, at::TensorList captures,
                                     bool captureGradients) {
  runtime::VariantSpec spec;
  spec.variant = std::move(variant);
  spec.headDim = headDim;
  spec.valueHeadDim = valueHeadDim;
  spec.causal = causal;
  spec.bfloat16 = dtype == at::kBFloat16;
  spec.keyLengths = keyLengths;
  if (scale)
    spec.scale = *scale;
  for (const at::Tensor &capture : captures)
    spec.captures.push_back(captureSignature(capture));
  spec.captureGradients = captureGradients;
  return spec;
}

bool anyCaptureRequiresGrad(at::TensorList captures) {
  for (const at::Tensor &capture : captures)
    if (at::isFloatingType(capture.scalar_type()) && capture.requires_grad())
      return true;
  return false;
}

std::vector<at::Tensor> captureGradientsInDtypes(const std::vector<at::Tensor> &gradients,
                                                 at::TensorList captures) {
  std::vector<at::Tensor> converted;
  for (size_t i = 0; i < gradients.size(); ++i)
    if (gradients[i].defined())
      converted.push_back(gradients[i].to(captures[i].scalar_type()));
  return converted;
}

std::vector<at::Tensor> captureGradientsMeta(at::TensorList captures, bool captureGradients) {
  std::vector<at::Tensor> gradients;
  if (captureGradients)
    for (const at::Tensor &capture : captures)
      if (at::isFloatingType(capture.scalar_type()))
        gradients.push_back(at::empty_symint(capture.sym_sizes(), capture.options()));
  return gradients;
}

torch::autograd::variable_list
autogradGradients(const at::Tensor &dq, const at::Tensor &dk, const at::Tensor &dv,
                  size_t argumentsBeforeCaptures, at::TensorList captures,
                  const std::vector<at::Tensor> &captureGrads, bool captureGradients) {
  torch::autograd::variable_list grads{dq, dk, dv};
  grads.resize(argumentsBeforeCaptures + captures.size());
  size_t next = 0;
  if (captureGradients)
    for (size_t i = 0; i < captures.size(); ++i)
      if (at::isFloatingType(captures[i].scalar_type()))
        grads[argumentsBeforeCaptures + i] = captureGrads[next++];
  return grads;
}

} // namespace attn::torchop
