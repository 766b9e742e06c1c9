// Run infrastructure: the EMA scaling rule, schedules, options, the step sampler, metrics files.
#include "models/data/Sampler.h"
#include "models/train/Config.h"
#include "models/train/Metrics.h"
#include "models/train/Schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace {
using namespace attn::train;

TEST(EmaScalingRule, MomentumIsRaisedToKappa) {
  // ρ̂ = ρ^κ: doubling the batch squares the momentum, halving it takes the square root.
  EXPECT_DOUBLE_EQ(scaledEmaMomentum(0.99, 1.0), 0.99);
  EXPECT_NEAR(scaledEmaMomentum(0.99, 2.0), 0.9801, 1e-15);
  EXPECT_NEAR(scaledEmaMomentum(0.99, 0.5), 0.99498743710662, 1e-13);
  EXPECT_NEAR(scaledEmaMomentum(0.996, 8.0), 0.96844443386277, 1e-13);
  // κ steps at ρ̂ move the target as far as κ·(one step at ρ) would: (ρ^κ)^(1/κ) = ρ.
  EXPECT_NEAR(std::pow(scaledEmaMomentum(0.999, 4.0), 0.25), 0.999, 1e-15);
  EXPECT_DOUBLE_EQ(scaledLearningRate(1e-3, 4.0), 4e-3);
}

TEST(EmaScalingRule, AdamTakesTheSquareRootRule) {
  AdamHyperparameters reference;
  reference.learningRate = 1e-3;
  reference.weightDecay = 0.05;
  reference.steps = 1000;
  reference.warmupSteps = 100;
  const AdamHyperparameters scaled = scaledAdam(reference, 4.0);
  EXPECT_DOUBLE_EQ(scaled.learningRate, 2e-3); // √4 · η, not 4 · η (SGD's rule)
  EXPECT_NEAR(scaled.beta1, 0.6, 1e-15);       // 1 − 4 · 0.1
  EXPECT_NEAR(scaled.beta2, 0.996, 1e-15);     // 1 − 4 · 0.001
  EXPECT_DOUBLE_EQ(scaled.epsilon, 5e-9);
  EXPECT_DOUBLE_EQ(scaled.weightDecay, 0.1);
  EXPECT_EQ(scaled.steps, 250); // as many examples as 1000 steps at the reference batch
  EXPECT_EQ(scaled.warmupSteps, 25);
  // Identity at κ = 1; halving the batch runs twice the steps.
  const AdamHyperparameters same = scaledAdam(reference, 1.0);
  EXPECT_DOUBLE_EQ(same.learningRate, 1e-3);
  EXPECT_DOUBLE_EQ(same.beta1, 0.9);
  EXPECT_EQ(same.steps, 1000);
  const AdamHyperparameters half = scaledAdam(reference, 0.5);
  EXPECT_EQ(half.steps, 2000);
  EXPECT_NEAR(half.beta1, 0.95, 1e-15);
  // κ · (1 − β1) > 1 would make β̂1 negative.
  EXPECT_THROW(scaledAdam(reference, 12.0), std::invalid_argument);
}

TEST(Schedules, WarmupCosineAndByolMomentum) {
  EXPECT_DOUBLE_EQ(cosineLearningRate(0, 100, 10, 1.0), 0.1);
  EXPECT_DOUBLE_EQ(cosineLearningRate(9, 100, 10, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(cosineLearningRate(10, 100, 10, 1.0), 1.0);
  EXPECT_NEAR(cosineLearningRate(55, 100, 10, 1.0), 0.5, 1e-12);
  EXPECT_NEAR(cosineLearningRate(100, 100, 10, 1.0), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(byolMomentum(0, 100, 0.99), 0.99);
  EXPECT_NEAR(byolMomentum(50, 100, 0.99), 0.995, 1e-12);
  EXPECT_DOUBLE_EQ(byolMomentum(100, 100, 0.99), 1.0);
}

TEST(Config, FlagsOverrideFileAndUnknownKeysAreErrors) {
  auto dir = std::filesystem::temp_directory_path() / "attn-config-test";
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "c.yaml") << "steps: 12\nbatch_size: 7\nlr: 0.5\n"; }
  { std::ofstream(dir / "c.json") << R"({"steps": 3, "sigma-reparam": true})"; }
  auto config = Config::fromArgs({"--config", (dir / "c.yaml").string(), "--steps=20", "--flag"});
  EXPECT_EQ(config.getInt("steps", 1, ""), 20);
  EXPECT_EQ(config.getInt("batch-size", 1, ""), 7);
  EXPECT_DOUBLE_EQ(config.getDouble("lr", 1, ""), 0.5);
  EXPECT_TRUE(config.getBool("flag", false, ""));
  EXPECT_NO_THROW(config.rejectUnknown("test"));

  auto json = Config::fromArgs({"--config=" + (dir / "c.json").string(), "--typo=1"});
  EXPECT_EQ(json.getInt("steps", 1, ""), 3);
  EXPECT_TRUE(json.getBool("sigma_reparam", false, ""));
  try {
    json.rejectUnknown("test");
    FAIL() << "an unknown key was accepted";
  } catch (const UsageError &e) {
    EXPECT_NE(std::string(e.what()).find("--typo"), std::string::npos) << e.what();
  }
  auto bad = Config::fromArgs({"--steps=ten", "--device=tpu"});
  EXPECT_THROW(bad.getInt("steps", 1, ""), UsageError);
  EXPECT_THROW(bad.getChoice("device", "cpu", {"cpu", "cuda"}, ""), UsageError);
  EXPECT_THROW(Config::fromArgs({"--config=" + (dir / "missing.yaml").string()}), UsageError);
  EXPECT_THROW(Config::fromArgs({"positional"}), UsageError);
}

TEST(StepSampler, RanksSplitTheGlobalBatchAndEpochsArePermutations) {
  attn::data::StepSampler single(100, 20, 7);
  attn::data::StepSampler rank0(100, 20, 7, 0, 2), rank1(100, 20, 7, 1, 2);
  for (int64_t step : {0, 3, 4, 5, 11}) {
    auto both = torch::cat({rank0.indices(step), rank1.indices(step)});
    EXPECT_TRUE(torch::equal(single.indices(step), both)) << "step " << step;
  }
  std::vector<torch::Tensor> epoch;
  for (int64_t step = 5; step < 10; ++step) // the second epoch
    epoch.push_back(single.indices(step));
  EXPECT_TRUE(torch::equal(std::get<0>(torch::cat(epoch).sort()), torch::arange(100)));
  EXPECT_FALSE(torch::equal(single.indices(0), single.indices(5)));
  EXPECT_THROW(attn::data::StepSampler(100, 15, 0, 0, 2), UsageError);
  EXPECT_THROW(attn::data::StepSampler(10, 20, 0), UsageError);
}

TEST(MetricsLog, ResumeKeepsRowsUpToTheCheckpoint) {
  auto dir = (std::filesystem::temp_directory_path() / "attn-metrics-test").string();
  std::filesystem::remove_all(dir);
  {
    MetricsLog log(dir, {"loss", "acc"});
    for (int64_t step = 1; step <= 4; ++step)
      log.write(step, {{"loss", 1.0 / double(step)}});
    log.write(4, {{"acc", 0.5}});
  }
  {
    MetricsLog log(dir, {"loss", "acc"}, 2);
    log.write(3, {{"loss", 7.0}});
  }
  auto loss = readJsonlColumn(dir + "/metrics.jsonl", "loss");
  ASSERT_EQ(loss.size(), 3u);
  EXPECT_DOUBLE_EQ(loss[1], 1.0);
  EXPECT_DOUBLE_EQ(loss[2], 0.5);
  EXPECT_DOUBLE_EQ(loss[3], 7.0);
  EXPECT_TRUE(readJsonlColumn(dir + "/metrics.jsonl", "acc").empty());
  std::ifstream csv(dir + "/metrics.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "step,loss,acc");
}

} // namespace
