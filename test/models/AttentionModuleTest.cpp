// models::Attention: the compiled core (attn::attention) against plain LibTorch references, for
// every normalizer and for RoPE, ALiBi, windows, key padding, GQA, QK-norm and entropy.
#include "models/Attention.h"
#include "models/AttentionVariant.h"
#include "test/models/TestSupport.h"
#include "test/torch/ReferenceAttention.h"

#include <gtest/gtest.h>

#include <cmath>

namespace attn::test {
namespace {

using models::Attention;
using models::AttentionBackend;
using models::AttentionOptions;

/// A sigmoid with bias −1 written as a user normalizer region (IR text).
const char *kIrSigmoid = R"(mlir:func.func @f(%q: tensor<?x?x?x8xf32>, %k: tensor<?x?x?x8xf32>,
             %v: tensor<?x?x?x8xf32>) -> tensor<?x?x?x8xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom)
      : tensor<?x?x?x8xf32>, tensor<?x?x?x8xf32>, tensor<?x?x?x8xf32> -> tensor<?x?x?x8xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %one = arith.constant 1.0 : f32
    %shifted = arith.subf %s, %one : f32
    %negated = arith.negf %shifted : f32
    %e = math.exp %negated : f32
    %d = arith.addf %e, %one : f32
    %p = arith.divf %one, %d : f32
    attn.yield %p : f32
  }
  return %o : tensor<?x?x?x8xf32>
})";

/// Runs `options` through the compiled and the reference backend with the same weights, in
/// float64, and compares the outputs and the gradients of x and of every parameter.
void expectBackendsAgree(AttentionOptions options, const std::string &referenceNormalizer = "",
                         const torch::Tensor &keyLengths = {}, int64_t length = 11) {
  torch::manual_seed(11);
  Attention compiled(options.backend(AttentionBackend::Compiled));
  AttentionOptions referenceOptions = options;
  referenceOptions.backend(AttentionBackend::Reference);
  if (!referenceNormalizer.empty())
    referenceOptions.normalizer(referenceNormalizer);
  Attention reference(referenceOptions);
  compiled->to(torch::kDouble);
  reference->to(torch::kDouble);
  copyState(*compiled, *reference);

  const torch::Tensor x = torch::randn({3, length, options.embed_dim()}, torch::kDouble);
  const torch::Tensor gradOut = torch::randn_like(x);
  const torch::Tensor xc = x.clone().requires_grad_(true), xr = x.clone().requires_grad_(true);
  const torch::Tensor outCompiled = compiled->forward(xc, keyLengths);
  const torch::Tensor outReference = reference->forward(xr, keyLengths);
  outCompiled.backward(gradOut);
  outReference.backward(gradOut);
  // The kernels compute in float32 (fp32 within 1e-5 of float64).
  EXPECT_LT(relativeError(outCompiled, outReference), 1e-5);
  EXPECT_LT(relativeError(xc.grad(), xr.grad()), 1e-5);
  const auto gradsCompiled = takeGradients(*compiled), gradsReference = takeGradients(*reference);
  ASSERT_EQ(gradsCompiled.size(), gradsReference.size());
  for (const auto &[name, grad] : gradsReference)
    EXPECT_LT(relativeError(gradsCompiled.at(name), grad), 2e-5) << name;
}

AttentionOptions small() { return AttentionOptions(16, 2); }

class AttentionNormalizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionNormalizerTest, CompiledMatchesReference) {
  expectBackendsAgree(small().normalizer(GetParam()));
}

TEST_P(AttentionNormalizerTest, CausalGqaQkNormRopeSeparateProjections) {
  expectBackendsAgree(AttentionOptions(32, 4)
                          .num_kv_heads(2)
                          .normalizer(GetParam())
                          .causal(true)
                          .qk_norm(true)
                          .rope(true)
                          .fused_qkv(false)
                          .sigma_reparam(true));
}

TEST_P(AttentionNormalizerTest, AlibiAndSlidingWindow) {
  expectBackendsAgree(AttentionOptions(32, 4).num_kv_heads(1).normalizer(GetParam()).alibi(true));
  expectBackendsAgree(small().normalizer(GetParam()).window(3));
  expectBackendsAgree(small().normalizer(GetParam()).window(2).causal(true).alibi(true));
}

TEST_P(AttentionNormalizerTest, KeyPaddingMatchesReference) {
  expectBackendsAgree(small().normalizer(GetParam()).causal(true),
                      /*referenceNormalizer=*/"", torch::tensor({11, 4, 7}, torch::kLong));
}

INSTANTIATE_TEST_SUITE_P(Builtin, AttentionNormalizerTest,
                         ::testing::Values("softmax", "sigmoid", "relu", "sigmoid(bias=-2)",
                                           "relu(scale=0.05)"),
                         [](const auto &info) {
                           std::string name;
                           for (char c : info.param)
                             name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(Attention, IrNormalizerMatchesItsBuiltinEquivalent) {
  // head_dim 8 = 16 / 2 heads, as the IR's static head dim.
  expectBackendsAgree(small().normalizer(kIrSigmoid), "sigmoid(bias=-1)");
  expectBackendsAgree(small().normalizer(kIrSigmoid).causal(true), "sigmoid(bias=-1)",
                      torch::tensor({5, 11, 5}, torch::kLong));
}

/// Independent of models/: q, k, v from the module's own projection, the core from
/// test/torch's reference (sigmoid with bias −ln n), then the output projection.
TEST(Attention, SigmoidModuleMatchesIndependentReference) {
  torch::manual_seed(12);
  Attention attention(AttentionOptions(16, 2).normalizer("sigmoid").causal(true));
  attention->to(torch::kDouble);
  const torch::Tensor x = torch::randn({2, 9, 16}, torch::kDouble);
  const torch::Tensor out = attention->forward(x);

  const auto parts = attention->qkv->forward(x).split(16, -1);
  auto heads = [](const torch::Tensor &t) { return t.view({2, 9, 2, 8}).transpose(1, 2); };
  const ReferenceResult core =
      referenceAttention(heads(parts[0]), heads(parts[1]), heads(parts[2]),
                         torch::zeros({2, 2, 9, 8}, torch::kDouble), sigmoidNormalizer(),
                         1.0 / std::sqrt(8.0), /*causal=*/true);
  const torch::Tensor expected =
      attention->output->forward(core.out.transpose(1, 2).reshape({2, 9, 16}));
  EXPECT_LT(relativeError(out, expected), 1e-5);
}

/// Key padding is exact: each sample equals that sample run alone on its own keys.
TEST(Attention, KeyPaddingEqualsRunningEachSampleAlone) {
  for (const std::string normalizer : {"softmax", "sigmoid", "relu"}) {
    torch::manual_seed(13);
    Attention attention(small().normalizer(normalizer).rope(true));
    const torch::Tensor x = torch::randn({3, 10, 16});
    const std::vector<int64_t> lengths = {10, 3, 6};
    const torch::Tensor padded = attention->forward(x, torch::tensor(lengths, torch::kLong));
    for (int64_t sample = 0; sample < 3; ++sample) {
      const int64_t n = lengths[sample];
      const torch::Tensor alone = attention->forward(x.slice(0, sample, sample + 1).narrow(1, 0, n));
      EXPECT_LT(relativeError(padded.slice(0, sample, sample + 1).narrow(1, 0, n), alone), 1e-6)
          << normalizer << " sample " << sample;
    }
  }
}

/// With q = 0 every score is 0, so softmax and sigmoid attend uniformly over the allowed keys
/// (entropy ln(number of keys)) and relu attends to nothing (entropy 0).
TEST(Attention, EntropyOfUniformAttentionIsLogOfKeyCount) {
  for (const std::string normalizer : {"softmax", "sigmoid", "relu(scale=0.1)"}) {
    Attention attention(small().normalizer(normalizer).record_entropy(true));
    {
      torch::NoGradGuard noGrad;
      attention->qkv->weight().narrow(0, 0, 16).zero_();
      attention->qkv->linear->bias.zero_();
    }
    const torch::Tensor x = torch::randn({2, 8, 16});
    attention->forward(x, torch::tensor({8, 4}, torch::kLong));
    const torch::Tensor entropy = attention->last_entropy();
    ASSERT_EQ(entropy.sizes(), torch::IntArrayRef({2}));
    if (normalizer.rfind("relu", 0) == 0) {
      // relu(0) = 0: every row is empty, and an empty row counts 0.
      EXPECT_NEAR(entropy.abs().max().item<double>(), 0.0, 1e-12);
      continue;
    }
    const double expected = (std::log(8.0) + std::log(4.0)) / 2.0;
    EXPECT_NEAR(entropy[0].item<double>(), expected, 1e-5) << normalizer;
    EXPECT_NEAR(entropy[1].item<double>(), expected, 1e-5) << normalizer;
  }
}

TEST(Attention, VariantTextCarriesWindowAndAlibi) {
  Attention plain(small().normalizer("sigmoid"));
  EXPECT_EQ(plain->variant(), "sigmoid");
  Attention windowed(small().normalizer("sigmoid(bias=-2)").window(5).alibi(true));
  const std::string &variant = windowed->variant();
  EXPECT_EQ(variant.rfind("mlir:", 0), 0u);
  EXPECT_NE(variant.find("#attn.sigmoid<bias = -2.0"), std::string::npos) << variant;
  EXPECT_NE(variant.find("window = 5"), std::string::npos) << variant;
  EXPECT_NE(variant.find("score_mod"), std::string::npos) << variant;
  EXPECT_NE(variant.find("xf32>"), std::string::npos) << variant;
}

TEST(Attention, RejectsBadOptionsWithClearMessages) {
  EXPECT_THROW(Attention(small().normalizer("softmx")), c10::Error);
  EXPECT_THROW(Attention(small().normalizer("relu(bias=1)")), c10::Error);
  EXPECT_THROW(Attention(small().normalizer(kIrSigmoid).window(4)), c10::Error);
  EXPECT_THROW(Attention(small().normalizer(kIrSigmoid).backend(AttentionBackend::Reference)),
               c10::Error);
  EXPECT_THROW(Attention(AttentionOptions(16, 4).num_kv_heads(3)), c10::Error);
  EXPECT_THROW(Attention(AttentionOptions(15, 2)), c10::Error);
  Attention attention(small());
  EXPECT_THROW(attention->forward(torch::randn({2, 5, 8})), c10::Error);
  EXPECT_THROW(attention->forward(torch::randn({2, 5, 16}), torch::tensor({5, 6}, torch::kLong)),
               c10::Error);
  EXPECT_THROW(attention->forward(torch::randn({2, 5, 16}), torch::tensor({5.0, 2.0})), c10::Error);
}

/// σReparam with the fused QKV projection, on the CPU in float32, runs as one compiled block
/// (attn::reparam_qkv_attention: q, k, v read in place in the projection's buffer); against
/// the reference backend in float64 (σReparam linear, split, plain LibTorch attention), train
/// and eval, causal and not, GQA, an odd length: outputs, gradients of x and every parameter,
/// and u after the step.
TEST(Attention, SigmaReparamFusedBlockMatchesFloat64Reference) {
  for (const bool training : {true, false})
    for (const bool causal : {false, true}) {
      torch::manual_seed(21);
      const AttentionOptions options =
          AttentionOptions(32, 4).num_kv_heads(2).causal(causal).sigma_reparam(true);
      Attention compiled(options);
      Attention reference(AttentionOptions(options).backend(AttentionBackend::Reference));
      reference->to(torch::kDouble);
      {
        torch::NoGradGuard noGrad; // an unconverged u: the power step matters
        compiled->qkv->reparam->u.copy_(torch::nn::functional::normalize(
            torch::randn({32}), torch::nn::functional::NormalizeFuncOptions().dim(0)));
      }
      copyState(*compiled, *reference);
      compiled->train(training);
      reference->train(training);
      const torch::Tensor uBefore = compiled->qkv->reparam->u.clone();
      const torch::Tensor x = torch::randn({3, 13, 32});
      const torch::Tensor gradOut = torch::randn_like(x);
      const torch::Tensor xc = x.clone().requires_grad_(true),
                          xr = x.to(torch::kDouble).requires_grad_(true);
      const torch::Tensor out = compiled->forward(xc), expected = reference->forward(xr);
      out.backward(gradOut);
      expected.backward(gradOut.to(torch::kDouble));
      EXPECT_EQ(out.scalar_type(), torch::kFloat);
      EXPECT_LT(relativeError(out, expected), 1e-5) << training << causal;
      EXPECT_LT(relativeError(xc.grad(), xr.grad()), 1e-5) << training << causal;
      const auto grads = takeGradients(*compiled), gradsReference = takeGradients(*reference);
      ASSERT_EQ(grads.size(), gradsReference.size());
      for (const auto &[name, grad] : gradsReference)
        EXPECT_LT(relativeError(grads.at(name), grad), 2e-5) << name << training << causal;
      EXPECT_LT(relativeError(compiled->qkv->reparam->u, reference->qkv->reparam->u), 1e-5);
      if (!training)
        EXPECT_TRUE(torch::equal(compiled->qkv->reparam->u, uBefore));
    }
}

} // namespace
} // namespace attn::test
