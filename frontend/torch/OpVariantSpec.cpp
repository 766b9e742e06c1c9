#include "frontend/torch/OpVariantSpec.h"

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

} // namespace attn::torchop
