// Checkpoints of a training run (not just of a model): the modules, the optimizer, the step and
// the default CPU generator's state. With the step-indexed data order (data/Sampler.h) that is
// everything a run depends on, so a resumed run continues with the same loss sequence.
#ifndef MODELS_TRAIN_TRAINSTATE_H
#define MODELS_TRAIN_TRAINSTATE_H

#include <torch/torch.h>

#include <map>
#include <string>

namespace attn::train {

struct TrainState {
  /// Saved and restored by name; the same names must be registered on resume.
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  std::map<std::string, torch::optim::Optimizer *> optimizers;
};

/// Writes `path` atomically (a temporary file, then rename). `step` = steps completed.
void saveTrainState(const TrainState &state, int64_t step, const std::string &path);
/// Restores the modules, optimizers and the default CPU generator; returns the step.
int64_t loadTrainState(const TrainState &state, const std::string &path);

} // namespace attn::train

#endif // MODELS_TRAIN_TRAINSTATE_H
