// The SSL heads: batch statistics (BYOL's projector and predictor collapse without them), the
// BatchNorm against torch's, and its statistics over ranks equal to one process's over the
// global batch (two Gloo ranks in two threads of this process), forward and backward.
#include "models/recipes/SslModels.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <thread>

namespace {
using namespace attn;
using recipes::HeadNorm;

models::VisionTransformerOptions tinyVit() {
  models::VisionTransformerOptions options(10);
  options.image_size(8).patch_size(4).in_channels(1).embed_dim(16).depth(1).num_heads(2);
  return options;
}

template <typename Module> int64_t countBatchNorms(Module &module) {
  int64_t n = 0;
  for (const auto &child : module.modules())
    n += dynamic_cast<recipes::SyncBatchNorm1dImpl *>(child.get()) != nullptr;
  return n;
}

// In training mode a head with batch statistics maps a sample differently when the rest of
// the batch changes; a per-sample norm (LayerNorm) does not.
bool dependsOnTheBatch(recipes::MlpHead &head) {
  head->train();
  auto x = torch::randn({8, 16});
  auto other = x.clone();
  other.slice(0, 1).mul_(3).add_(1);
  auto a = head->forward(x)[0], b = head->forward(other)[0];
  return !torch::allclose(a, b, 1e-6, 1e-6);
}

TEST(SslModels, HeadsNormaliseWithBatchStatisticsByDefault) {
  torch::manual_seed(0);
  recipes::SslEncoder encoder(tinyVit(), 32, 8);
  EXPECT_EQ(countBatchNorms(*encoder->projector), 1);
  recipes::MlpHead predictor(16, 32, 16, false);
  EXPECT_EQ(countBatchNorms(*predictor), 1);
  EXPECT_TRUE(dependsOnTheBatch(predictor));
  recipes::MlpHead layer(16, 32, 16, false, HeadNorm::Layer);
  EXPECT_EQ(countBatchNorms(*layer), 0);
  EXPECT_FALSE(dependsOnTheBatch(layer));
}

TEST(SslModels, TargetKeepsBatchStatisticsInEvalMode) {
  // BYOL's target: the rest in eval mode (σReparam follows the online u), BatchNorm on batches.
  recipes::SslEncoder encoder(tinyVit(), 32, 8);
  encoder->eval();
  recipes::useBatchStatistics(*encoder);
  EXPECT_FALSE(encoder->backbone->is_training());
  EXPECT_TRUE(encoder->projector->batchNorm->is_training());
  auto images = torch::rand({6, 1, 8, 8});
  auto a = encoder->forward(images).slice(0, 0, 3);
  auto b = encoder->forward(images.slice(0, 0, 3));
  EXPECT_FALSE(torch::allclose(a, b, 1e-6, 1e-6)) << "the statistics are not the batch's";
}

TEST(SslModels, BatchNormMatchesTorchInTrainingAndEval) {
  torch::manual_seed(1);
  recipes::SyncBatchNorm1d ours(5);
  torch::nn::BatchNorm1d reference(5);
  ours->to(torch::kFloat64);
  reference->to(torch::kFloat64);
  {
    torch::NoGradGuard noGrad;
    ours->weight.uniform_(0.5, 2);
    ours->bias.normal_();
    reference->weight.copy_(ours->weight);
    reference->bias.copy_(ours->bias);
  }
  auto x = (torch::randn({12, 5}, torch::kFloat64) * 3 + 2).requires_grad_();
  auto xr = x.detach().clone().requires_grad_();
  auto w = torch::randn({12, 5}, torch::kFloat64);
  auto y = ours->forward(x), yr = reference->forward(xr);
  EXPECT_LT((y - yr).abs().max().item<double>(), 1e-12);
  (y * w).sum().backward();
  (yr * w).sum().backward();
  EXPECT_LT((x.grad() - xr.grad()).abs().max().item<double>(), 1e-12);
  EXPECT_LT((ours->weight.grad() - reference->weight.grad()).abs().max().item<double>(), 1e-12);
  EXPECT_LT((ours->bias.grad() - reference->bias.grad()).abs().max().item<double>(), 1e-12);
  EXPECT_LT((ours->running_mean - reference->running_mean).abs().max().item<double>(), 1e-12);
  EXPECT_LT((ours->running_var - reference->running_var).abs().max().item<double>(), 1e-12);
  ours->eval();
  reference->eval();
  auto z = torch::randn({4, 5}, torch::kFloat64);
  EXPECT_LT((ours->forward(z) - reference->forward(z)).abs().max().item<double>(), 1e-12);
}

TEST(SslModels, BatchNormOverTwoRanksEqualsOneProcessOverTheGlobalBatch) {
  torch::manual_seed(2);
  const int64_t n = 10, c = 6;
  auto x = torch::randn({2 * n, c}, torch::kFloat64) * 2 + 1;
  auto w = torch::randn({2 * n, c}, torch::kFloat64);

  // One process, the whole batch.
  recipes::SyncBatchNorm1d single(c);
  single->to(torch::kFloat64);
  auto xs = x.clone().requires_grad_();
  auto ys = single->forward(xs);
  (ys * w).sum().backward();

  // Two ranks, half each: the loss is the sum of the ranks' losses (gradients summed).
  int port = 21000 + int(getpid() % 20000);
  struct RankResult {
    torch::Tensor y, xGrad, weightGrad, biasGrad, runningVar;
    std::string error;
  } results[2];
  auto rank = [&](int r) {
    try {
      train::DistributedOptions options;
      options.worldSize = 2;
      options.rank = r;
      options.masterPort = port;
      options.timeoutSeconds = 60;
      auto group = std::make_shared<train::Distributed>(options, torch::kCPU);
      recipes::SyncBatchNorm1d bn(c);
      bn->to(torch::kFloat64);
      recipes::setBatchNormGroup(*bn, group);
      auto xr = x.slice(0, r * n, (r + 1) * n).clone().requires_grad_();
      auto y = bn->forward(xr);
      (y * w.slice(0, r * n, (r + 1) * n)).sum().backward();
      std::vector<torch::Tensor> grads{bn->weight.grad(), bn->bias.grad()};
      group->allReduce(grads, 1.0);
      results[r] = {y.detach(), xr.grad(), grads[0], grads[1], bn->running_var.clone(), ""};
    } catch (const std::exception &e) {
      results[r].error = e.what();
    }
  };
  std::thread other(rank, 1);
  rank(0);
  other.join();
  ASSERT_EQ(results[0].error, "");
  ASSERT_EQ(results[1].error, "");
  auto y = torch::cat({results[0].y, results[1].y});
  auto xGrad = torch::cat({results[0].xGrad, results[1].xGrad});
  EXPECT_LT((y - ys).abs().max().item<double>(), 1e-12);
  EXPECT_LT((xGrad - xs.grad()).abs().max().item<double>(), 1e-12);
  for (int r = 0; r < 2; ++r) {
    EXPECT_LT((results[r].weightGrad - single->weight.grad()).abs().max().item<double>(), 1e-12);
    EXPECT_LT((results[r].biasGrad - single->bias.grad()).abs().max().item<double>(), 1e-12);
    EXPECT_LT((results[r].runningVar - single->running_var).abs().max().item<double>(), 1e-12);
  }
  // Without the all-reduce each rank would normalise with its half's statistics.
  recipes::SyncBatchNorm1d local(c);
  local->to(torch::kFloat64);
  EXPECT_GT((local->forward(x.slice(0, 0, n)) - ys.slice(0, 0, n)).abs().max().item<double>(), 1e-3);
}

} // namespace
