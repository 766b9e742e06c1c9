// The torch op against the float64 reference over variants × causal × head dims × dtypes ×
// GQA × odd lengths. Each axis is covered fully by a deterministic subset of the product
// (every variant with and without causal, in float32 and a 16-bit dtype, with at least two
// head dims and two head layouts), so that the suite compiles few kernels and stays fast.
#include "test/torch/NumericsSupport.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <optional>
#include <vector>

namespace attn::test {
namespace {

struct NumericsCase {
  Variant variant;
  bool causal;
  int64_t headDim, valueHeadDim;
  at::ScalarType dtype;
  int64_t queryHeads, kvHeads;
  int64_t queryLength, keyLength;
  std::optional<double> scale = std::nullopt;
};

constexpr int64_t kBatch = 2;

const std::vector<NumericsCase> &numericsCases() {
  using V = Variant;
  static const std::vector<NumericsCase> cases = {
      // Every variant, causal and not.
      {V::Softmax, false, 64, 64, at::kFloat, 4, 2, 37, 53},
      {V::Softmax, true, 128, 128, at::kBFloat16, 2, 2, 64, 64},
      {V::Sigmoid, false, 32, 32, at::kHalf, 4, 1, 64, 64},
      {V::Sigmoid, true, 80, 80, at::kFloat, 4, 2, 61, 29},
      {V::SigmoidBias, false, 128, 128, at::kFloat, 2, 2, 1, 37},
      {V::SigmoidBias, true, 64, 64, at::kBFloat16, 4, 1, 37, 53},
      {V::Relu, false, 80, 80, at::kBFloat16, 4, 2, 64, 64},
      {V::Relu, true, 32, 32, at::kFloat, 2, 2, 37, 53},
      {V::ReluScale, false, 64, 64, at::kHalf, 2, 2, 61, 29},
      {V::ReluScale, true, 128, 128, at::kFloat, 4, 1, 64, 64},
      {V::CustomHalfTanh, false, 32, 32, at::kFloat, 4, 1, 37, 53},
      {V::CustomHalfTanh, true, 80, 80, at::kHalf, 4, 2, 1, 37},
      // Softmax, the row-wise normalizer, on the remaining axes.
      {V::Softmax, true, 32, 32, at::kFloat, 4, 1, 61, 29},
      {V::Softmax, false, 80, 80, at::kHalf, 2, 2, 1, 37},
      {V::Softmax, false, 32, 32, at::kDouble, 4, 2, 37, 53},
      // Value head dim unlike the query/key head dim.
      {V::Softmax, false, 64, 32, at::kFloat, 4, 2, 37, 53},
      {V::Sigmoid, true, 32, 80, at::kFloat, 2, 2, 64, 64},
      {V::CustomHalfTanh, false, 64, 128, at::kBFloat16, 2, 2, 61, 29},
      // An explicit scale overrides 1/sqrt(D).
      {V::Softmax, true, 64, 64, at::kFloat, 4, 2, 37, 53, 0.3},
      {V::Relu, false, 64, 64, at::kFloat, 4, 1, 37, 53, 0.05},
  };
  return cases;
}

std::string dtypeName(at::ScalarType dtype) {
  switch (dtype) {
  case at::kFloat:
    return "f32";
  case at::kBFloat16:
    return "bf16";
  case at::kHalf:
    return "f16";
  case at::kDouble:
    return "f64";
  default:
    return "other";
  }
}

std::string caseName(const testing::TestParamInfo<size_t> &info) {
  const NumericsCase &c = numericsCases()[info.param];
  std::string name = variantName(c.variant) + (c.causal ? "_causal" : "") + "_D" +
                     std::to_string(c.headDim) + "_Dv" + std::to_string(c.valueHeadDim) + "_" +
                     dtypeName(c.dtype) + "_Hq" + std::to_string(c.queryHeads) + "_Hkv" +
                     std::to_string(c.kvHeads) + "_Sq" + std::to_string(c.queryLength) + "_Sk" +
                     std::to_string(c.keyLength);
  if (c.scale)
    name += "_scaled";
  return name;
}

class AttentionNumerics : public testing::TestWithParam<size_t> {};

TEST_P(AttentionNumerics, MatchesFloat64Reference) {
  const NumericsCase &c = numericsCases()[GetParam()];
  // A seed per case: fresh inputs in every case, the same ones in every run.
  at::Generator generator = at::detail::createCPUGenerator(1000 + GetParam());
  const at::Tensor q =
      randomTensor({kBatch, c.queryHeads, c.queryLength, c.headDim}, c.dtype, generator);
  const at::Tensor k =
      randomTensor({kBatch, c.kvHeads, c.keyLength, c.headDim}, c.dtype, generator);
  const at::Tensor v =
      randomTensor({kBatch, c.kvHeads, c.keyLength, c.valueHeadDim}, c.dtype, generator);
  const at::Tensor gradOut =
      randomTensor({kBatch, c.queryHeads, c.queryLength, c.valueHeadDim}, c.dtype, generator);

  AttentionOptions options;
  options.variant = variantText(c.variant, c.headDim, c.valueHeadDim);
  options.scale = c.scale;
  options.causal = c.causal;
  expectMatchesReference(q, k, v, gradOut, options, referenceNormalizerOf(c.variant));
}

INSTANTIATE_TEST_SUITE_P(Matrix, AttentionNumerics,
                         testing::Range<size_t>(0, numericsCases().size()), caseName);

} // namespace
} // namespace attn::test
