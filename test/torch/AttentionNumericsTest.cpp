// The torch op against the float64 reference. Every variant × causal × head dim runs; dtype,
// head layout (GQA, MHA, MQA) and lengths rotate through those cases so that every pair of
// values of any two axes meets in some case (pairwise coverage), which keeps the suite fast.
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

std::vector<NumericsCase> pairwiseCases() {
  const Variant variants[] = {Variant::Softmax,   Variant::Sigmoid,   Variant::SigmoidBias,
                              Variant::Relu,      Variant::ReluScale, Variant::CustomHalfTanh};
  const int64_t headDims[] = {32, 64, 80, 128};
  const at::ScalarType dtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};
  const int64_t headLayouts[][2] = {{4, 2}, {2, 2}, {4, 1}}; // {Hq, Hkv}: GQA, MHA, MQA
  const int64_t lengths[][2] = {{37, 53}, {64, 64}, {1, 37}, {61, 29}}; // {Sq, Sk}
  std::vector<NumericsCase> cases;
  for (int variant = 0; variant < 6; ++variant) {
    for (int causal = 0; causal < 2; ++causal) {
      for (int dim = 0; dim < 4; ++dim) {
        // These rotations cover every pair of axis values (checked by enumeration) and skip
        // causal softmax with Sq = 1: its single allowed key gets p = 1, so the q and k
        // gradients are zero and a relative error has no scale.
        const int64_t *heads = headLayouts[(variant + 2 * dim) % 3];
        const int64_t *length = lengths[(variant + causal + 2 * dim) % 4];
        cases.push_back({variants[variant], causal == 1, headDims[dim], headDims[dim],
                         dtypes[(variant + dim) % 3], heads[0], heads[1], length[0], length[1]});
      }
    }
  }
  return cases;
}

const std::vector<NumericsCase> &numericsCases() {
  static const std::vector<NumericsCase> cases = [] {
    using V = Variant;
    std::vector<NumericsCase> all = pairwiseCases();
    const std::vector<NumericsCase> extra = {
        // A value head dim unlike the query/key head dim.
        {V::Softmax, false, 64, 32, at::kFloat, 4, 2, 37, 53},
        {V::Sigmoid, true, 32, 80, at::kFloat, 2, 2, 64, 64},
        {V::CustomHalfTanh, false, 64, 128, at::kBFloat16, 2, 2, 61, 29},
        // An explicit scale overrides 1/sqrt(D).
        {V::Softmax, true, 64, 64, at::kFloat, 4, 2, 37, 53, 0.3},
        {V::Relu, false, 64, 64, at::kFloat, 4, 1, 37, 53, 0.05},
        // float64 runs in float32 and comes back as float64.
        {V::Softmax, false, 32, 32, at::kDouble, 4, 2, 37, 53},
    };
    all.insert(all.end(), extra.begin(), extra.end());
    return all;
  }();
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
