#include "models/data/Sampler.h"

#include "models/train/Config.h"

namespace attn::data {

StepSampler::StepSampler(int64_t datasetSize, int64_t globalBatch, uint64_t seed, int64_t rank,
                         int64_t worldSize)
    : size_(datasetSize), globalBatch_(globalBatch), rank_(rank), worldSize_(worldSize),
      seed_(seed) {
  if (globalBatch <= 0 || globalBatch > datasetSize)
    throw train::UsageError("--batch-size must be in [1, " + std::to_string(datasetSize) +
                            "] (the training set's size), got " + std::to_string(globalBatch));
  if (globalBatch % worldSize != 0)
    throw train::UsageError("--batch-size (" + std::to_string(globalBatch) +
                            ", the global batch) must be a multiple of --world-size (" +
                            std::to_string(worldSize) + ")");
  stepsPerEpoch_ = datasetSize / globalBatch; // the last partial batch is dropped
}

torch::Tensor StepSampler::indices(int64_t step) {
  int64_t epoch = step / stepsPerEpoch_, inEpoch = step % stepsPerEpoch_;
  if (epoch != cachedEpoch_) {
    // A generator of its own: the data order never depends on how much randomness the model
    // or the augmentations consumed.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed_ * 1000003ULL + uint64_t(epoch));
    permutation_ = torch::randperm(size_, generator, torch::kInt64);
    cachedEpoch_ = epoch;
  }
  int64_t local = localBatch();
  int64_t start = inEpoch * globalBatch_ + rank_ * local;
  return permutation_.slice(0, start, start + local);
}

} // namespace attn::data
