// The recipes' AdamW groups: decay on weight matrices and kernels only.
#include "models/VisionTransformer.h"
#include "models/train/Optimizer.h"

#include <gtest/gtest.h>

#include <set>

namespace {
using namespace attn::train;
using attn::models::BlockNorm;
using attn::models::VisionTransformer;
using attn::models::VisionTransformerOptions;

VisionTransformer tinySigmaReparamVit() {
  VisionTransformerOptions options(5);
  options.image_size(8).patch_size(4).in_channels(1).embed_dim(16).depth(2).num_heads(2);
  options.attention().normalizer("sigmoid");
  options.norm(BlockNorm::HybridNorm).layer_scale_init(0.1).sigma_reparam(true);
  return VisionTransformer(options);
}

TEST(AdamWParameterGroups, DecayOnlyOnMatricesAndKernels) {
  torch::manual_seed(0);
  VisionTransformer model = tinySigmaReparamVit();
  const auto groups = adamWParameterGroups({model.get()}, 1e-3, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  std::set<const void *> decayed, plain;
  for (const auto &p : groups[0].params())
    decayed.insert(p.unsafeGetTensorImpl());
  for (const auto &p : groups[1].params())
    plain.insert(p.unsafeGetTensorImpl());
  EXPECT_DOUBLE_EQ(
      static_cast<const torch::optim::AdamWOptions &>(groups[0].options()).weight_decay(), 0.05);
  EXPECT_DOUBLE_EQ(
      static_cast<const torch::optim::AdamWOptions &>(groups[1].options()).weight_decay(), 0.0);
  int64_t gammas = 0, tokens = 0;
  for (const auto &item : model->named_parameters()) {
    if (!item.value().requires_grad())
      continue;
    const std::string &name = item.key();
    const void *impl = item.value().unsafeGetTensorImpl();
    EXPECT_NE(decayed.count(impl), plain.count(impl)) << name << " must be in exactly one group";
    const bool matrix = item.value().dim() >= 2 && name.find("class_token") == std::string::npos &&
                        name.find("position_embedding") == std::string::npos;
    EXPECT_EQ(decayed.count(impl), matrix ? 1u : 0u) << name;
    gammas += name.size() >= 5 && name.substr(name.size() - 5) == "gamma";
    tokens += name == "class_token" || name == "position_embedding";
  }
  EXPECT_GT(gammas, 0) << "the model must have σReparam γs for the test to mean something";
  EXPECT_EQ(tokens, 2);
}

TEST(AdamWParameterGroups, GroupsKeepTheGivenBetasAndEpsilon) {
  torch::manual_seed(2);
  VisionTransformer model = tinySigmaReparamVit();
  const auto options =
      torch::optim::AdamWOptions(2e-3).weight_decay(0.1).betas({0.8, 0.998}).eps(7e-9);
  for (const auto &group : adamWParameterGroups({model.get()}, options)) {
    const auto &groupOptions = static_cast<const torch::optim::AdamWOptions &>(group.options());
    EXPECT_DOUBLE_EQ(std::get<0>(groupOptions.betas()), 0.8);
    EXPECT_DOUBLE_EQ(std::get<1>(groupOptions.betas()), 0.998);
    EXPECT_DOUBLE_EQ(groupOptions.eps(), 7e-9);
    EXPECT_DOUBLE_EQ(groupOptions.lr(), 2e-3);
  }
}

TEST(AdamWParameterGroups, ZeroGradientStepDecaysOnlyTheMatrices) {
  // With zero gradients an AdamW step only applies the decay, w -= lr * wd * w: a bias, a norm,
  // γ, the class token and the position embedding must not move.
  torch::manual_seed(1);
  VisionTransformer model = tinySigmaReparamVit();
  const double lr = 0.1, decay = 0.5;
  torch::optim::AdamW optimizer(adamWParameterGroups({model.get()}, lr, decay),
                                torch::optim::AdamWOptions(lr).weight_decay(decay));
  std::map<std::string, torch::Tensor> before;
  for (const auto &item : model->named_parameters()) {
    before[item.key()] = item.value().detach().clone();
    item.value().mutable_grad() = torch::zeros_like(item.value());
  }
  optimizer.step();
  for (const auto &item : model->named_parameters()) {
    if (!item.value().requires_grad())
      continue;
    const torch::Tensor &old = before[item.key()];
    const torch::Tensor expected =
        takesWeightDecay(item.key(), item.value()) ? old * (1 - lr * decay) : old;
    EXPECT_TRUE(torch::allclose(item.value(), expected, 1e-6, 1e-7)) << item.key();
  }
}

} // namespace
