// Augmentation draws in data-parallel runs: one generator per (seed, step) draws the whole
// global batch's parameters and each rank keeps its rows, so the ranks' views together are
// exactly one process's views of the global batch, and no two ranks share draws.
#include "models/data/Augment.h"

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

} // namespace
