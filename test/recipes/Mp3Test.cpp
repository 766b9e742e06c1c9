// MP3's position prediction masks keys only: every patch is a query and gets position logits,
// only the visible (context) patches are keys/values.
#include "models/recipes/Mp3.h"

#include <gtest/gtest.h>

namespace {

using namespace attn::models;

constexpr int64_t kImage = 8, kPatch = 2, kGrid = kImage / kPatch, kPatches = kGrid * kGrid;

struct Mp3Model {
  VisionTransformer model{nullptr};
  Projection head{nullptr};
};

Mp3Model tinyMp3(AttentionBackend backend, const std::string &normalizer) {
  VisionTransformerOptions options(10);
  options.image_size(kImage).patch_size(kPatch).in_channels(1).embed_dim(16).depth(2).num_heads(2);
  options.position_embedding(false).pooling(Pooling::Mean);
  options.attention().normalizer(normalizer).backend(backend);
  Mp3Model m;
  m.model = VisionTransformer(options);
  // Larger than the ViT init, so that every dependence shows well above float32 rounding.
  m.head = Projection(ProjectionOptions(16, kPatches).init_multiplier(50.0));
  return m;
}

/// `images` with patch `patch` (row-major index) overwritten by new random content.
torch::Tensor withPatchChanged(const torch::Tensor &images, int64_t sample, int64_t patch) {
  auto changed = images.clone();
  int64_t row = patch / kGrid, col = patch % kGrid;
  changed[sample].slice(1, row * kPatch, (row + 1) * kPatch).slice(2, col * kPatch, (col + 1) * kPatch) =
      torch::randn({1, kPatch, kPatch}) * 3.0;
  return changed;
}

void expectKeysOnlyMasking(AttentionBackend backend, const std::string &normalizer) {
  torch::manual_seed(3);
  auto m = tinyMp3(backend, normalizer);
  torch::NoGradGuard noGrad;
  const int64_t batch = 3, visible = 6;
  auto images = torch::randn({batch, 1, kImage, kImage});
  auto order = attn::recipes::mp3PatchOrder(batch, kPatches, torch::kCPU);
  auto logits = attn::recipes::mp3PositionLogits(m.model, m.head, images, order, visible);
  // Every position is a query and has logits over all positions (the loss covers all of them).
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{batch, kPatches, kPatches}));

  auto change = [&](int64_t slot) { // max |Δ logits| per (sample, slot) after changing order[1][slot]
    auto other = attn::recipes::mp3PositionLogits(
        m.model, m.head, withPatchChanged(images, 1, order[1][slot].item<int64_t>()), order, visible);
    return (other - logits).abs().amax(-1); // [B, P]
  };
  double scale = logits.abs().max().item<double>();
  // A masked patch is no key: only its own row changes.
  for (int64_t slot : {visible, kPatches - 1}) {
    auto delta = change(slot);
    EXPECT_GT(delta[1][slot].item<double>(), 1e-3 * scale) << "masked slot " << slot << " is a query";
    delta[1][slot] = 0;
    EXPECT_LT(delta.max().item<double>(), 1e-6 * scale) << "masked slot " << slot << " reached other rows";
  }
  // A visible patch is a key/value: every row of its sample changes, no other sample's.
  for (int64_t slot : {int64_t(0), visible - 1}) {
    auto delta = change(slot);
    EXPECT_GT(delta[1].min().item<double>(), 1e-4 * scale) << "visible slot " << slot;
    EXPECT_LT(delta[0].max().item<double>() + delta[2].max().item<double>(), 1e-6 * scale);
  }
}

TEST(Mp3Masking, EveryPatchIsAQueryAndOnlyVisiblePatchesAreKeys) {
  for (auto backend : {AttentionBackend::Reference, AttentionBackend::Compiled})
    for (std::string normalizer : {"softmax", "sigmoid"}) {
      SCOPED_TRACE((backend == AttentionBackend::Compiled ? "compiled " : "reference ") + normalizer);
      expectKeysOnlyMasking(backend, normalizer);
    }
}

TEST(Mp3PatchOrder, RowsArePermutations) {
  auto order = attn::recipes::mp3PatchOrder(4, kPatches, torch::kCPU);
  ASSERT_EQ(order.sizes(), (std::vector<int64_t>{4, kPatches}));
  EXPECT_TRUE(std::get<0>(order.sort(1)).equal(torch::arange(kPatches).expand({4, kPatches})));
}

TEST(Mp3PositionLogits, RejectsBadVisibleCounts) {
  auto m = tinyMp3(AttentionBackend::Reference, "softmax");
  auto images = torch::randn({1, 1, kImage, kImage});
  auto order = attn::recipes::mp3PatchOrder(1, kPatches, torch::kCPU);
  EXPECT_THROW(attn::recipes::mp3PositionLogits(m.model, m.head, images, order, 0), c10::Error);
  EXPECT_THROW(attn::recipes::mp3PositionLogits(m.model, m.head, images, order, kPatches + 1), c10::Error);
}

} // namespace
