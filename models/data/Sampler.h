// Which examples each step sees. The order is a pure function of (seed, step): epoch e is the
// permutation drawn from seed and e, so resuming at step s needs no saved iterator state, and
// with W ranks each takes its contiguous share of the same global batch (so W processes with
// batch B/W see exactly what one process with batch B sees).
#ifndef MODELS_DATA_SAMPLER_H
#define MODELS_DATA_SAMPLER_H

#include <torch/torch.h>

namespace attn::data {

class StepSampler {
public:
  /// Throws a UsageError unless 0 < globalBatch ≤ datasetSize and worldSize divides globalBatch.
  StepSampler(int64_t datasetSize, int64_t globalBatch, uint64_t seed, int64_t rank = 0,
              int64_t worldSize = 1);

  /// Indices [globalBatch / worldSize] (int64) of this rank's examples at 0-based `step`.
  torch::Tensor indices(int64_t step);
  int64_t stepsPerEpoch() const { return stepsPerEpoch_; }
  int64_t localBatch() const { return globalBatch_ / worldSize_; }

private:
  int64_t size_, globalBatch_, rank_, worldSize_, stepsPerEpoch_;
  uint64_t seed_;
  int64_t cachedEpoch_ = -1;
  torch::Tensor permutation_;
};

} // namespace attn::data

#endif // MODELS_DATA_SAMPLER_H
