// --attention=sigmoid turns on the stabilisers the sigmoid-attention paper trains with (QK-norm,
// LayerScale 0.1; the bias −ln n is the normalizer's own default); explicit flags override them
// and other normalizers keep them off.
#include "models/recipes/Recipes.h"
#include "models/recipes/Vision.h"

#include <gtest/gtest.h>

namespace {
using namespace attn;

models::VisionTransformerOptions vitFor(std::vector<std::string> args) {
  auto config = train::Config::fromArgs(args);
  auto common = train::parseCommonOptions(config, "vit-supervised", train::RecipeDefaults{});
  return recipes::parseVitOptions(config, common);
}

TEST(SigmoidDefaults, SigmoidAttentionGetsQkNormAndLayerScale) {
  for (const std::string attention : {"sigmoid", "sigmoid(bias=-3.5)"}) {
    auto options = vitFor({"--attention=" + attention});
    EXPECT_TRUE(options.attention().qk_norm()) << attention;
    EXPECT_DOUBLE_EQ(options.layer_scale_init(), 0.1) << attention;
    EXPECT_EQ(options.attention().normalizer(), attention);
  }
}

TEST(SigmoidDefaults, OtherNormalizersKeepThemOff) {
  for (const std::string attention : {"softmax", "relu"}) {
    auto options = vitFor({"--attention=" + attention});
    EXPECT_FALSE(options.attention().qk_norm()) << attention;
    EXPECT_EQ(options.layer_scale_init(), 0.0) << attention;
  }
}

TEST(SigmoidDefaults, ExplicitFlagsOverride) {
  auto off = vitFor({"--attention=sigmoid", "--qk-norm=false", "--layer-scale=0"});
  EXPECT_FALSE(off.attention().qk_norm());
  EXPECT_EQ(off.layer_scale_init(), 0.0);
  auto on = vitFor({"--attention=softmax", "--qk-norm", "--layer-scale=0.5", "--norm=hybrid"});
  EXPECT_TRUE(on.attention().qk_norm());
  EXPECT_DOUBLE_EQ(on.layer_scale_init(), 0.5);
  EXPECT_EQ(on.norm(), models::BlockNorm::HybridNorm);
}

} // namespace
