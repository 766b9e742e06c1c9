// Shared pieces of the torch op's numerics tests: the variants under test, seeded random
// inputs, and the comparison of the op (forward and gradients) against the float64 reference.
#ifndef TEST_TORCH_NUMERICSSUPPORT_H
#define TEST_TORCH_NUMERICSSUPPORT_H

#include "frontend/torch/Attention.h"
#include "test/torch/ReferenceAttention.h"

#include <ATen/ATen.h>

#include <string>

namespace attn::test {

enum class Variant { Softmax, Sigmoid, SigmoidBias, Relu, ReluScale, CustomHalfTanh };

/// A short name for test names, e.g. "sigmoid_bias".
std::string variantName(Variant variant);
/// The op's variant string; a custom variant is IR whose types carry the head dims.
std::string variantText(Variant variant, int64_t headDim, int64_t valueHeadDim);
ReferenceNormalizer referenceNormalizerOf(Variant variant);

/// ‖actual − expected‖ / ‖expected‖ in float64.
double relativeError(const at::Tensor &actual, const at::Tensor &expected);
/// 1e-5 for float32 and float64 (computed in float32), 1e-2 for bfloat16 and float16.
double toleranceFor(at::ScalarType dtype);

/// Standard-normal values drawn in float32 from `generator`, then cast to `dtype`.
at::Tensor randomTensor(at::IntArrayRef sizes, at::ScalarType dtype, at::Generator &generator);

/// Runs attn::attention on q, k, v (their strides kept) and backpropagates `gradOut`;
/// expects the output and the three gradients to match the reference within the dtype's
/// tolerance.
void expectMatchesReference(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                            const at::Tensor &gradOut, const AttentionOptions &options,
                            const ReferenceNormalizer &normalizer);

} // namespace attn::test

#endif // TEST_TORCH_NUMERICSSUPPORT_H
