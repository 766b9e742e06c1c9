#include "test/torch/NumericsSupport.h"

#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>

namespace attn::test {

std::string variantName(Variant variant) {
  switch (variant) {
  case Variant::Softmax:
    return "softmax";
  case Variant::Sigmoid:
    return "sigmoid";
  case Variant::SigmoidBias:
    return "sigmoid_bias";
  case Variant::Relu:
    return "relu";
  case Variant::ReluScale:
    return "relu_scale";
  case Variant::CustomHalfTanh:
    return "custom_half_tanh";
  }
  return "unknown";
}

namespace {

/// p = 0.5·(1 + tanh(s)) written as IR: the custom normalizer path, derivative derived
/// symbolically by the compiler.
std::string halfTanhIr(int64_t headDim, int64_t valueHeadDim) {
  const std::string qkType = "tensor<?x?x?x" + std::to_string(headDim) + "xf32>";
  const std::string vType = "tensor<?x?x?x" + std::to_string(valueHeadDim) + "xf32>";
  return "func.func @half_tanh(%q: " + qkType + ", %k: " + qkType + ", %v: " + vType +
         ") -> " + vType + " {\n"
         "  %o = attn.attention %q, %k, %v normalizer(#attn.custom)\n"
         "      : " + qkType + ", " + qkType + ", " + vType + " -> " + vType + "\n"
         "  normalizer_body {\n"
         "  ^bb0(%s: f32):\n"
         "    %half = arith.constant 0.5 : f32\n"
         "    %t = math.tanh %s : f32\n"
         "    %h = arith.mulf %t, %half : f32\n"
         "    %p = arith.addf %h, %half : f32\n"
         "    attn.yield %p : f32\n"
         "  }\n"
         "  return %o : " + vType + "\n"
         "}\n";
}

} // namespace

std::string variantText(Variant variant, int64_t headDim, int64_t valueHeadDim) {
  switch (variant) {
  case Variant::Softmax:
    return "softmax";
  case Variant::Sigmoid:
    return "sigmoid";
  case Variant::SigmoidBias:
    return "sigmoid(bias=-3.5)";
  case Variant::Relu:
    return "relu";
  case Variant::ReluScale:
    return "relu(scale=0.01)";
  case Variant::CustomHalfTanh:
    return "mlir:" + halfTanhIr(headDim, valueHeadDim);
  }
  return "unknown";
}

ReferenceNormalizer referenceNormalizerOf(Variant variant) {
  switch (variant) {
  case Variant::Softmax:
    return softmaxNormalizer();
  case Variant::Sigmoid:
    return sigmoidNormalizer();
  case Variant::SigmoidBias:
    return sigmoidNormalizer(-3.5);
  case Variant::Relu:
    return reluNormalizer();
  case Variant::ReluScale:
    return reluNormalizer(0.01);
  case Variant::CustomHalfTanh:
    return elementwiseNormalizer([](const at::Tensor &s) { return 0.5 * (1 + s.tanh()); });
  }
  return nullptr;
}

double relativeError(const at::Tensor &actual, const at::Tensor &expected) {
  const at::Tensor expected64 = expected.to(at::kDouble);
  return (actual.to(at::kDouble) - expected64).norm().item<double>() /
         expected64.norm().item<double>();
}

double toleranceFor(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf ? 1e-2 : 1e-5;
}

at::Tensor randomTensor(at::IntArrayRef sizes, at::ScalarType dtype, at::Generator &generator) {
  return at::randn(sizes, generator, at::TensorOptions().dtype(at::kFloat)).to(dtype);
}

void expectMatchesReference(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                            const at::Tensor &gradOut, const AttentionOptions &options,
                            const ReferenceNormalizer &normalizer) {
  // detach() keeps the strides, so the op sees the layout the caller built.
  const at::Tensor qLeaf = q.detach().requires_grad_(true);
  const at::Tensor kLeaf = k.detach().requires_grad_(true);
  const at::Tensor vLeaf = v.detach().requires_grad_(true);
  const at::Tensor out = attention(qLeaf, kLeaf, vLeaf, options);
  const torch::autograd::variable_list grads =
      torch::autograd::grad({out}, {qLeaf, kLeaf, vLeaf}, {gradOut});

  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(3))));
  const ReferenceResult expected =
      referenceAttention(q, k, v, gradOut, normalizer, scale, options.causal);

  const double tolerance = toleranceFor(q.scalar_type());
  EXPECT_EQ(out.scalar_type(), q.scalar_type());
  EXPECT_EQ(out.sizes(), expected.out.sizes());
  EXPECT_LT(relativeError(out, expected.out), tolerance) << "output";
  EXPECT_LT(relativeError(grads[0], expected.gradQ), tolerance) << "dq";
  EXPECT_LT(relativeError(grads[1], expected.gradK), tolerance) << "dk";
  EXPECT_LT(relativeError(grads[2], expected.gradV), tolerance) << "dv";
  for (size_t index = 0; index < grads.size(); ++index)
    EXPECT_EQ(grads[index].scalar_type(), q.scalar_type()) << "gradient " << index;
}

} // namespace attn::test
