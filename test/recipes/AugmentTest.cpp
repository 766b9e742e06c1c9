// Augmentation draws in data-parallel runs: one generator per (seed, step) draws the whole
// global batch's parameters and each rank keeps its rows, so the ranks' views together are
// exactly one process's views of the global batch, and no two ranks share draws.
#include "models/data/Augment.h"
#include "models/recipes/Mp3.h"
#include "models/recipes/Vision.h"

#include <gtest/gtest.h>

namespace {
using attn::data::SampleRandom;

attn::data::ViewOptions everyAugmentation() {
  attn::data::ViewOptions options;
  options.size = 12;
  options.jitterProbability = 1.0;
  options.blurProbability = 0.5;
  options.randAugmentOps = 2;
  return options;
}

TEST(Augment, RankSlicesOfTheGlobalDrawEqualOneProcessesViews) {
  torch::manual_seed(0);
  const int64_t global = 12, world = 3, local = global / world;
  auto images = torch::rand({global, 3, 12, 12});
  auto options = everyAugmentation();
  // One process: two views of the global batch, drawn one after the other (as BYOL does).
  auto random = SampleRandom::forStep(7, 5, global, 0);
  auto first = attn::data::sslView(images, options, random);
  auto second = attn::data::sslView(images, options, random);
  for (int64_t rank = 0; rank < world; ++rank) {
    auto mine = images.slice(0, rank * local, (rank + 1) * local);
    // Another process's default generator state must not matter.
    torch::manual_seed(100 + rank);
    auto rankRandom = SampleRandom::forStep(7, 5, global, rank * local);
    auto a = attn::data::sslView(mine, options, rankRandom);
    auto b = attn::data::sslView(mine, options, rankRandom);
    EXPECT_EQ((a - first.slice(0, rank * local, (rank + 1) * local)).abs().max().item<float>(), 0.0f)
        << "rank " << rank;
    EXPECT_EQ((b - second.slice(0, rank * local, (rank + 1) * local)).abs().max().item<float>(), 0.0f)
        << "rank " << rank;
  }
}

TEST(Augment, RanksDrawDifferentParametersForTheirSamples) {
  // The old way, one identically seeded generator per rank, gave every rank the same draws.
  auto like = torch::zeros({1});
  auto rank0 = SampleRandom::forStep(7, 5, 8, 0).rand(4, like);
  auto rank1 = SampleRandom::forStep(7, 5, 8, 4).rand(4, like);
  EXPECT_FALSE(torch::equal(rank0, rank1));
  auto whole = SampleRandom::forStep(7, 5, 8, 0).rand(8, like);
  EXPECT_TRUE(torch::equal(whole, torch::cat({rank0, rank1})));
}

TEST(Augment, DrawsArePureFunctionsOfSeedAndStep) {
  auto like = torch::zeros({1});
  auto draw = [&](uint64_t seed, int64_t step) { return SampleRandom::forStep(seed, step, 6, 0).rand(6, like); };
  torch::manual_seed(1);
  auto a = draw(3, 10);
  torch::rand({100}); // consuming the default generator changes nothing
  EXPECT_TRUE(torch::equal(a, draw(3, 10)));
  EXPECT_FALSE(torch::equal(a, draw(3, 11)));
  EXPECT_FALSE(torch::equal(a, draw(4, 10)));
  auto ints = SampleRandom::forStep(3, 10, 6, 2).randint(11, 4, like);
  EXPECT_EQ(ints.dtype(), torch::kInt64);
  EXPECT_TRUE(torch::equal(ints, SampleRandom::forStep(3, 10, 6, 0).randint(11, 6, like).slice(0, 2)));
  EXPECT_THROW(SampleRandom::forStep(3, 10, 6, 4).rand(3, like), c10::Error);
}

/// Each of `world` ranks draws with forStep for its slice of the global batch; their results,
/// concatenated, must equal one process's draw for the whole batch, whatever the default
/// generator's state, and a second step must draw differently.
template <typename Draw>
void expectRankSlicesEqualOneProcess(int64_t global, int64_t world, Draw draw) {
  const int64_t local = global / world;
  torch::manual_seed(0);
  auto whole = draw(SampleRandom::forStep(7, 5, global, 0), 0, global);
  std::vector<torch::Tensor> slices;
  for (int64_t rank = 0; rank < world; ++rank) {
    torch::manual_seed(100 + rank); // another process's default generator state must not matter
    slices.push_back(draw(SampleRandom::forStep(7, 5, global, rank * local), rank * local, local));
  }
  EXPECT_TRUE(torch::equal(torch::cat(slices), whole));
  // The old way, an identically seeded default generator per rank, gave every rank rank 0's
  // draws: the ranks' draws must differ for different samples.
  EXPECT_FALSE(torch::equal(slices[0], slices[1]));
  // A pure function of (seed, step).
  torch::manual_seed(42);
  EXPECT_TRUE(torch::equal(draw(SampleRandom::forStep(7, 5, global, 0), 0, global), whole));
  EXPECT_FALSE(torch::equal(draw(SampleRandom::forStep(7, 6, global, 0), 0, global), whole));
}

TEST(Augment, SupervisedAugmentationRankSlicesEqualOneProcess) {
  // vit-supervised and distill: --augment=crop-flip and randaugment.
  torch::manual_seed(1);
  auto images = torch::rand({12, 1, 8, 8});
  for (std::string mode : {"crop-flip", "randaugment"})
    expectRankSlicesEqualOneProcess(12, 3, [&](SampleRandom random, int64_t offset, int64_t n) {
      return attn::recipes::augmentSupervised(images.slice(0, offset, offset + n), mode, random);
    });
}

TEST(Augment, Mp3MasksRankSlicesEqualOneProcess) {
  expectRankSlicesEqualOneProcess(8, 2, [&](SampleRandom random, int64_t, int64_t n) {
    auto order = attn::recipes::mp3PatchOrder(n, 16, torch::kCPU, random);
    EXPECT_TRUE(torch::equal(std::get<0>(order.sort(1)), torch::arange(16).expand({n, 16})));
    return order;
  });
}

TEST(Augment, TimeMasksRankSlicesEqualOneProcess) {
  // asr-ctc --time-masks: spans start inside each utterance's valid length.
  torch::manual_seed(2);
  auto waves = torch::rand({8, 4000}) + 0.5; // no zeros before masking
  auto lengths = torch::tensor({4000, 3000, 2500, 4000, 1000, 3999, 2000, 3500}, torch::kInt64);
  expectRankSlicesEqualOneProcess(8, 4, [&](SampleRandom random, int64_t offset, int64_t n) {
    auto masked = attn::data::randomTimeMasks(waves.slice(0, offset, offset + n),
                                              lengths.slice(0, offset, offset + n), 2, 1600, random);
    return masked;
  });
  auto masked = attn::data::randomTimeMasks(waves, lengths, 2, 1600, SampleRandom::forStep(1, 1, 8, 0));
  auto zeroed = masked.eq(0).sum(1);
  EXPECT_GT(zeroed.sum().item<int64_t>(), 0);
  EXPECT_LE(zeroed.max().item<int64_t>(), 2 * 1599);
}

} // namespace
