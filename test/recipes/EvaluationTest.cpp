// What the recipes report beside their losses: the linear probe on frozen features, the
// attention entropy per layer and σReparam's γ/σ, and --init's checkpoint loading.
#include "models/Checkpoint.h"
#include "models/recipes/Diagnostics.h"
#include "models/recipes/Vision.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

namespace {
using namespace attn;

TEST(LinearProbe, SeparatesLinearlySeparableClassesAndNotRandomLabels) {
  torch::manual_seed(0);
  const int64_t classes = 5, dim = 16;
  auto centres = torch::randn({classes, dim}) * 3;
  auto sample = [&](int64_t n) {
    auto labels = torch::randint(0, classes, {n}, torch::kInt64);
    // Features on very different scales (the probe standardises them) plus noise.
    auto scale = torch::logspace(-3, 3, dim);
    return std::make_pair((centres.index_select(0, labels) + torch::randn({n, dim})) * scale, labels);
  };
  auto [trainX, trainY] = sample(1000);
  auto [testX, testY] = sample(500);
  EXPECT_GT(recipes::linearProbeAccuracy(trainX, trainY, testX, testY, classes), 0.95);
  // Labels that no feature predicts: chance (1/5), whatever the probe fits on the training set.
  auto noise = torch::randint(0, classes, {500}, torch::kInt64);
  EXPECT_LT(recipes::linearProbeAccuracy(trainX, torch::randint(0, classes, {1000}, torch::kInt64), testX,
                                         noise, classes),
            0.35);
  // Deterministic: the same inputs give the same figure.
  EXPECT_EQ(recipes::linearProbeAccuracy(trainX, trainY, testX, testY, classes),
            recipes::linearProbeAccuracy(trainX, trainY, testX, testY, classes));
}

models::VisionTransformer tinyVit(const std::string &normalizer, bool sigmaReparam) {
  models::VisionTransformerOptions options(10);
  options.image_size(8).patch_size(2).in_channels(1).embed_dim(16).depth(3).num_heads(2);
  options.attention().normalizer(normalizer);
  options.sigma_reparam(sigmaReparam);
  return models::VisionTransformer(options);
}

TEST(Diagnostics, EntropyPerLayerIsTheMeanOverHeadsOfTheModelsOwnFigure) {
  torch::manual_seed(1);
  auto model = tinyVit("softmax", false);
  // Sharpen some attention so that layers differ.
  {
    torch::NoGradGuard noGrad;
    for (auto &p : model->parameters())
      p.mul_(20);
  }
  auto images = torch::randn({4, 1, 8, 8});
  auto columns = recipes::diagnosticColumns("softmax", 3, false);
  ASSERT_EQ(columns.entropy.size(), 3u);
  EXPECT_EQ(columns.entropy[2], "attention_entropy_l2");
  EXPECT_TRUE(columns.sigma.empty());
  model->train();
  auto values = recipes::attentionDiagnostics(columns, *model, *model->encoder, [&] { model->forward(images); });
  EXPECT_TRUE(model->is_training()) << "mode not restored";
  for (const auto &block : *model->encoder->blocks)
    EXPECT_FALSE(block->as<models::TransformerBlockImpl>()->attention->options.record_entropy());
  // The reference: record_entropy on, eval mode, the model's own attention_entropy().
  for (const auto &block : *model->encoder->blocks)
    block->as<models::TransformerBlockImpl>()->attention->options.record_entropy(true);
  model->eval();
  torch::NoGradGuard noGrad;
  model->forward(images);
  auto expected = model->attention_entropy().to(torch::kFloat64).mean(1);
  for (int64_t layer = 0; layer < 3; ++layer) {
    double value = values.at("attention_entropy_l" + std::to_string(layer));
    EXPECT_NEAR(value, expected[layer].item<double>(), 1e-6);
    EXPECT_GE(value, 0.0);
    EXPECT_LE(value, std::log(16.0) + 1e-5); // 16 keys: at most ln 16
  }
  EXPECT_GT(std::abs(values.at("attention_entropy_l0") - std::log(16.0)), 1e-3) << "nothing sharpened";
}

TEST(Diagnostics, SigmaStatisticsOverEverySigmaReparamLayer) {
  torch::manual_seed(2);
  auto model = tinyVit("sigmoid", true);
  auto columns = recipes::diagnosticColumns("sigmoid", 3, true);
  EXPECT_EQ(columns.sigma, (std::vector<std::string>{"sigma_min", "sigma_mean", "sigma_max"}));
  auto norms = recipes::effectiveSpectralNorms(*model);
  // Patch embedding + per block (qkv, output, fc1, fc2) + head.
  EXPECT_EQ(norms.size(), 1u + 3u * 4u + 1u);
  {
    torch::NoGradGuard noGrad;
    model->encoder->blocks[0]->as<models::TransformerBlockImpl>()->attention->qkv->reparam->gamma.fill_(7.0);
  }
  auto values = recipes::attentionDiagnostics(columns, *model, *model->encoder,
                                              [&] { model->forward(torch::randn({2, 1, 8, 8})); });
  auto changed = recipes::effectiveSpectralNorms(*model);
  double mean = 0, low = 1e9, high = 0;
  for (double v : changed)
    mean += v / double(changed.size()), low = std::min(low, v), high = std::max(high, v);
  EXPECT_NEAR(values.at("sigma_max"), high, 1e-12);
  EXPECT_NEAR(values.at("sigma_min"), low, 1e-12);
  EXPECT_NEAR(values.at("sigma_mean"), mean, 1e-12);
  auto qkv = model->encoder->blocks[0]->as<models::TransformerBlockImpl>()->attention->qkv->reparam;
  EXPECT_NEAR(high, 7.0 / qkv->spectral_norm().item<double>(), 1e-6 * high); // float32
}

TEST(Diagnostics, NoEntropyColumnsForUserWrittenNormalizers) {
  auto columns = recipes::diagnosticColumns("mlir:module {}", 4, false);
  EXPECT_TRUE(columns.entropy.empty());
  std::vector<std::string> names{"loss"};
  std::vector<std::vector<std::string>> panels;
  columns.addTo(names, panels);
  EXPECT_EQ(names.size(), 1u);
  EXPECT_TRUE(panels.empty());
}

TEST(InitFromCheckpoint, CopiesTheBackboneAndNamesAMismatch) {
  auto dir = std::filesystem::temp_directory_path() / ("attn-init-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  torch::manual_seed(3);
  auto source = tinyVit("softmax", false);
  auto path = (dir / "model.pt").string();
  models::save_checkpoint(source, path, {{"recipe", "byol"}});
  torch::manual_seed(4);
  auto target = tinyVit("softmax", false);
  int64_t copied = recipes::initFromCheckpoint(target, path, /*withHead=*/true, /*log=*/false);
  auto a = source->named_parameters(), b = target->named_parameters();
  int64_t heads = 0;
  for (const auto &item : a) {
    bool head = item.key().rfind("head.", 0) == 0;
    heads += head;
    // A BYOL backbone's head was never trained: it stays the fresh model's (biases: both 0).
    if (!head || item.key() == "head.linear.weight")
      EXPECT_EQ(torch::equal(item.value(), b[item.key()]), !head) << item.key();
  }
  EXPECT_EQ(copied, int64_t(a.size() + source->named_buffers().size()) - heads);
  // A supervised checkpoint's head is copied too.
  models::save_checkpoint(source, path, {{"recipe", "vit-supervised"}});
  recipes::initFromCheckpoint(target, path, true, false);
  EXPECT_TRUE(torch::equal(source->named_parameters()["head.linear.weight"],
                           target->named_parameters()["head.linear.weight"]));
  // Other options: an error that names the tensor.
  auto other = tinyVit("softmax", true);
  try {
    recipes::initFromCheckpoint(other, path, true, false);
    FAIL() << "no error";
  } catch (const train::UsageError &error) {
    EXPECT_NE(std::string(error.what()).find("patch_embedding"), std::string::npos) << error.what();
  }
  std::filesystem::remove_all(dir);
}

} // namespace
