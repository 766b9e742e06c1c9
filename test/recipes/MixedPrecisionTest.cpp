// --dtype=bfloat16 as mixed precision: float32 parameters (the master weights), products in
// bfloat16 under autocast, the custom ops (attn::attention, attn::reparam_linear) given dtypes
// they accept, and autocast's state restored after each scope.
#include "models/Autocast.h"
#include "models/VisionTransformer.h"
#include "models/train/Run.h"

#include <gtest/gtest.h>

namespace {
using namespace attn;

models::VisionTransformer tinyVit(bool sigmaReparam, const std::string &normalizer, bool qkNorm) {
  models::VisionTransformerOptions options(10);
  options.image_size(8).patch_size(2).in_channels(1).embed_dim(32).depth(2).num_heads(2);
  options.attention().normalizer(normalizer).qk_norm(qkNorm);
  options.sigma_reparam(sigmaReparam);
  return models::VisionTransformer(options);
}

train::CommonOptions bfloat16Run() {
  train::CommonOptions common;
  common.autocast = torch::kBFloat16;
  return common;
}

TEST(MixedPrecision, ProductsInBfloat16GradientsReachFloat32Masters) {
  for (bool sigmaReparam : {false, true})
    for (const char *normalizer : {"softmax", "sigmoid"}) {
      torch::manual_seed(0);
      auto model = tinyVit(sigmaReparam, normalizer, /*qkNorm=*/std::string(normalizer) == "sigmoid");
      auto images = torch::randn({6, 1, 8, 8});
      auto reference = model->forward(images).to(torch::kFloat64);
      torch::Tensor logits;
      {
        train::AutocastScope autocast(bfloat16Run());
        EXPECT_TRUE(models::autocastDtype(torch::kCPU).has_value());
        logits = model->forward(images);
      }
      EXPECT_FALSE(models::autocastDtype(torch::kCPU).has_value()) << "autocast left on";
      // σReparam layers compute in their float32 parameters' dtype (power iteration and σ);
      // the attention op and plain linears run in bfloat16.
      EXPECT_EQ(logits.scalar_type(), sigmaReparam ? torch::kFloat32 : torch::kBFloat16)
          << "the head's product";
      double error = ((logits.to(torch::kFloat64) - reference).norm() / reference.norm()).item<double>();
      EXPECT_LT(error, 5e-2) << normalizer << " sigma-reparam " << sigmaReparam;
      EXPECT_GT(error, 0.0) << "nothing ran in bfloat16";
      logits.to(torch::kFloat32).square().mean().backward();
      for (const auto &item : model->named_parameters()) {
        EXPECT_EQ(item.value().scalar_type(), torch::kFloat32) << item.key();
        if (item.value().grad().defined())
          EXPECT_EQ(item.value().grad().scalar_type(), torch::kFloat32) << item.key();
      }
    }
}

TEST(MixedPrecision, ScopeWithoutAutocastChangesNothing) {
  train::CommonOptions common; // --dtype=float32
  torch::manual_seed(1);
  auto model = tinyVit(false, "softmax", false);
  auto images = torch::randn({2, 1, 8, 8});
  auto plain = model->forward(images);
  train::AutocastScope scope(common);
  EXPECT_FALSE(models::autocastDtype(torch::kCPU).has_value());
  EXPECT_TRUE(torch::equal(model->forward(images), plain));
}

TEST(MixedPrecision, ParsedBfloat16KeepsFloat32Parameters) {
  auto config = train::Config::fromArgs({"--dtype=bfloat16"});
  auto common = train::parseCommonOptions(config, "test", train::RecipeDefaults{});
  EXPECT_EQ(common.dtype, torch::kFloat32);
  ASSERT_TRUE(common.autocast.has_value());
  EXPECT_EQ(*common.autocast, torch::kBFloat16);
}

} // namespace
