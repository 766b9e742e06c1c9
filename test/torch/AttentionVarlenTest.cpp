// The C++ entry point of packed sequences, attn::attention_varlen: one call equals one
// attn::attention call per sequence, forward and gradients, and its argument errors.
#include "test/torch/NumericsSupport.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/autograd.h>

#include <utility>
#include <vector>

namespace attn::test {
namespace {

/// Sequence s's rows of a packed [T, H, D] tensor as a [1, H, S, D] leaf.
at::Tensor sequenceOf(const at::Tensor &packed, int64_t start, int64_t end) {
  return packed.detach().slice(0, start, end).transpose(0, 1).unsqueeze(0).clone()
      .requires_grad_();
}

at::Tensor unpacked(const at::Tensor &batched) { return batched.squeeze(0).transpose(0, 1); }

TEST(AttentionVarlen, OneCallEqualsOneCallPerSequence) {
  at::Generator generator = at::detail::createCPUGenerator(11);
  // (queries, keys): a sequence without keys, one without queries, odd lengths, Sq != Sk.
  const std::vector<std::pair<int64_t, int64_t>> lengths{{33, 33}, {4, 0}, {0, 6}, {1, 70},
                                                         {91, 45}};
  std::vector<int64_t> queryOffsets{0}, keyOffsets{0};
  for (const auto &[queries, keys] : lengths) {
    queryOffsets.push_back(queryOffsets.back() + queries);
    keyOffsets.push_back(keyOffsets.back() + keys);
  }
  const at::Tensor q = randomTensor({queryOffsets.back(), 4, 32}, at::kFloat, generator)
                           .requires_grad_();
  const at::Tensor k = randomTensor({keyOffsets.back(), 2, 32}, at::kFloat, generator)
                           .requires_grad_();
  const at::Tensor v = randomTensor({keyOffsets.back(), 2, 16}, at::kFloat, generator)
                           .requires_grad_();
  AttentionOptions options;
  options.variant = "sigmoid";
  options.causal = true;
  const at::Tensor out = attention_varlen(q, k, v, at::tensor(queryOffsets),
                                          at::tensor(keyOffsets), options);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{queryOffsets.back(), 4, 16}));
  const at::Tensor gradOut = randomTensor(out.sizes(), at::kFloat, generator);
  const auto grads = torch::autograd::grad({out}, {q, k, v}, {gradOut});

  for (size_t s = 0; s < lengths.size(); ++s) {
    const int64_t q0 = queryOffsets[s], q1 = queryOffsets[s + 1];
    const int64_t k0 = keyOffsets[s], k1 = keyOffsets[s + 1];
    if (q1 == q0 || k1 == k0) {
      // Nothing attends, or nothing to attend to: zero rows and zero gradients.
      EXPECT_EQ(out.slice(0, q0, q1).abs().sum().item<float>(), 0.0f) << "sequence " << s;
      EXPECT_EQ(grads[1].slice(0, k0, k1).abs().sum().item<float>(), 0.0f) << "sequence " << s;
      continue;
    }
    const at::Tensor qs = sequenceOf(q, q0, q1), ks = sequenceOf(k, k0, k1),
                     vs = sequenceOf(v, k0, k1);
    const at::Tensor alone = attention(qs, ks, vs, options);
    EXPECT_TRUE(at::allclose(out.slice(0, q0, q1), unpacked(alone), 1e-5, 1e-6))
        << "sequence " << s;
    const auto aloneGrads = torch::autograd::grad(
        {alone}, {qs, ks, vs}, {gradOut.slice(0, q0, q1).transpose(0, 1).unsqueeze(0)});
    EXPECT_TRUE(at::allclose(grads[0].slice(0, q0, q1), unpacked(aloneGrads[0]), 1e-5, 1e-6))
        << "dq of sequence " << s;
    EXPECT_TRUE(at::allclose(grads[1].slice(0, k0, k1), unpacked(aloneGrads[1]), 1e-5, 1e-6))
        << "dk of sequence " << s;
    EXPECT_TRUE(at::allclose(grads[2].slice(0, k0, k1), unpacked(aloneGrads[2]), 1e-5, 1e-6))
        << "dv of sequence " << s;
  }
}

TEST(AttentionVarlen, KeyLengthsDoNotApply) {
  const at::Tensor q = at::randn({8, 2, 16}), offsets = at::tensor({0, 8});
  AttentionOptions options;
  options.kvLengths = at::tensor({8});
  try {
    attention_varlen(q, q, q, offsets, offsets, options);
    FAIL() << "expected an error";
  } catch (const c10::Error &error) {
    EXPECT_NE(std::string(error.what()).find("kv_lengths does not apply to packed sequences"),
              std::string::npos)
        << error.what();
  }
}

TEST(AttentionVarlen, OffsetsPastThePackedLengthAreNamed) {
  const at::Tensor q = at::randn({8, 2, 16});
  try {
    attention_varlen(q, q, q, at::tensor({0, 3, 9}), at::tensor({0, 3, 8}));
    FAIL() << "expected an error";
  } catch (const c10::Error &error) {
    EXPECT_NE(std::string(error.what()).find("cu_seqlens_q must end at the packed length 8, "
                                             "got 9"),
              std::string::npos)
        << error.what();
  }
}

} // namespace
} // namespace attn::test
