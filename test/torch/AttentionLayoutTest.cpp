// The op on inputs laid out unlike a contiguous [B, H, S, D] tensor, on empty lengths, and
// without autograd (the CPU kernel reached directly).
#include "test/torch/NumericsSupport.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/autograd.h>

namespace attn::test {
namespace {

class AttentionLayout : public testing::Test {
protected:
  at::Tensor random(at::IntArrayRef sizes) {
    return randomTensor(sizes, at::kFloat, generator);
  }

  at::Generator generator = at::detail::createCPUGenerator(7);
};

TEST_F(AttentionLayout, QueryTransposedFromBatchSequenceHeadsDim) {
  // [B, S, H, D] as projections produce it, viewed as [B, H, S, D]: non-contiguous, last
  // stride 1, so the op reads it in place.
  const at::Tensor q = random({2, 37, 4, 64}).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  const at::Tensor k = random({2, 2, 53, 64});
  const at::Tensor v = random({2, 53, 2, 64}).transpose(1, 2);
  expectMatchesReference(q, k, v, random({2, 4, 37, 64}), {}, softmaxNormalizer());
}

TEST_F(AttentionLayout, HeadDimNotInnermost) {
  const at::Tensor q = random({2, 4, 64, 37}).transpose(2, 3);
  ASSERT_NE(q.stride(3), 1);
  const at::Tensor k = random({2, 2, 53, 64}), v = random({2, 2, 53, 64});
  AttentionOptions options;
  options.variant = "sigmoid";
  options.causal = true;
  expectMatchesReference(q, k, v, random({2, 4, 37, 64}), options, sigmoidNormalizer());
}

TEST_F(AttentionLayout, KeysBroadcastOverBatch) {
  // Stride 0 along the batch: the kernels read one k/v for both batch entries.
  const at::Tensor q = random({2, 4, 37, 32});
  const at::Tensor k = random({1, 2, 53, 32}).expand({2, 2, 53, 32});
  const at::Tensor v = random({1, 2, 53, 32}).expand({2, 2, 53, 32});
  expectMatchesReference(q, k, v, random({2, 4, 37, 32}), {}, softmaxNormalizer());
}

TEST_F(AttentionLayout, NoKeysGivesZeros) {
  const at::Tensor q = random({2, 4, 5, 32}).requires_grad_(true);
  const at::Tensor k = random({2, 2, 0, 32}).requires_grad_(true);
  const at::Tensor v = random({2, 2, 0, 16}).requires_grad_(true);
  const at::Tensor out = attention(q, k, v);
  EXPECT_EQ(out.sizes(), at::IntArrayRef({2, 4, 5, 16}));
  EXPECT_TRUE(out.eq(0).all().item<bool>());

  out.backward(random({2, 4, 5, 16}));
  EXPECT_TRUE(q.grad().eq(0).all().item<bool>());
  EXPECT_EQ(k.grad().sizes(), k.sizes());
  EXPECT_EQ(v.grad().sizes(), v.sizes());
}

TEST_F(AttentionLayout, NoQueriesGivesEmptyOutputAndZeroKeyGradients) {
  const at::Tensor q = random({2, 4, 0, 32}).requires_grad_(true);
  const at::Tensor k = random({2, 2, 7, 32}).requires_grad_(true);
  const at::Tensor v = random({2, 2, 7, 32}).requires_grad_(true);
  const at::Tensor out = attention(q, k, v, {"relu", std::nullopt, true});
  EXPECT_EQ(out.sizes(), at::IntArrayRef({2, 4, 0, 32}));

  out.backward(random({2, 4, 0, 32}));
  EXPECT_TRUE(k.grad().eq(0).all().item<bool>());
  EXPECT_TRUE(v.grad().eq(0).all().item<bool>());
}

TEST_F(AttentionLayout, InferenceModeReachesTheCpuKernel) {
  const at::Tensor q = random({1, 2, 19, 64}).to(at::kBFloat16);
  const at::Tensor k = random({1, 2, 23, 64}).to(at::kBFloat16);
  const at::Tensor v = random({1, 2, 23, 64}).to(at::kBFloat16);
  const at::Tensor withAutograd = attention(q, k, v);
  at::Tensor withoutAutograd;
  {
    c10::InferenceMode guard;
    withoutAutograd = attention(q, k, v);
  }
  EXPECT_EQ(withoutAutograd.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(withoutAutograd.equal(withAutograd));
}

} // namespace
} // namespace attn::test
