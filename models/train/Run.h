// What every recipe shares: the common options (output folder, device, dtype, seed, steps,
// batch, learning rate, attention variant, σReparam, distributed launch), and a Trainer that runs
// the step loop with the progress bar, metrics, plots, evaluation, checkpoints and resume.
#ifndef MODELS_TRAIN_RUN_H
#define MODELS_TRAIN_RUN_H

#include "models/train/Config.h"
#include "models/train/Distributed.h"
#include "models/train/Metrics.h"
#include "models/train/TrainState.h"

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attn::train {

/// A recipe's own defaults for the common options.
struct RecipeDefaults {
  int64_t steps = 200;
  int64_t batchSize = 128;
  double learningRate = 1e-3;
  double weightDecay = 0.05;
  int64_t warmupSteps = 20;
  int64_t evalEvery = 100;
};

struct CommonOptions {
  std::string recipe, outDir, dataDir, resume;
  torch::Device device = torch::kCPU;
  /// The parameters' (and the inputs') dtype. --dtype=bfloat16 keeps float32 here: the
  /// parameters are the optimizer's float32 master weights and `autocast` says how to compute.
  torch::Dtype dtype = torch::kFloat32;
  /// Mixed precision: steps and evaluations run under torch's autocast to this dtype (products
  /// in bfloat16, gradients reach the float32 parameters through autocast's casts).
  std::optional<torch::Dtype> autocast;
  int64_t seed = 0, steps = 0, batchSize = 0, warmupSteps = 0;
  int64_t logEvery = 10, evalEvery = 0, checkpointEvery = 0, threads = 0;
  /// Stop (with a checkpoint) after this many steps of this invocation: emulates preemption.
  int64_t stopAfter = 0;
  double learningRate = 0, weightDecay = 0;
  bool progress = true, plot = true;
  /// The variant for attn::attention: softmax, sigmoid, relu, or "mlir:" + the IR file's text.
  std::string attentionVariant, attentionOption;
  bool sigmaReparam = false;
  DistributedOptions distributed;
};

/// Declares and reads the common options. `--attention=<file>` reads the file's IR.
CommonOptions parseCommonOptions(Config &config, const std::string &recipe,
                                 const RecipeDefaults &defaults);

/// After a recipe declared all its options: with --help prints them and returns true (the
/// recipe then exits 0); otherwise throws a UsageError for any option it did not declare.
bool finishOptions(Config &config, const std::string &recipe);

/// Seeds the default generator with --seed and sets --threads; call before building models.
void applyRuntimeOptions(const CommonOptions &options);

/// Within its scope, autocast to options.autocast on the run's device (nothing without one);
/// restores the previous state and drops autocast's cached weight casts on exit, so the next
/// step casts the updated parameters afresh. The Trainer holds one around each step and
/// evaluation; recipes hold one around work outside Trainer::run (e.g. a step-0 evaluation).
class AutocastScope {
public:
  explicit AutocastScope(const CommonOptions &options);
  ~AutocastScope();
  AutocastScope(const AutocastScope &) = delete;
  AutocastScope &operator=(const AutocastScope &) = delete;

private:
  bool active_ = false, wasEnabled_ = false;
  c10::DeviceType deviceType_ = c10::DeviceType::CPU;
  at::ScalarType previousDtype_ = at::kBFloat16;
};

/// Metrics a step or an evaluation reports, by name (e.g. "loss", "test_accuracy").
using Values = std::map<std::string, double>;

class Trainer {
public:
  /// `columns`: every metric name the run will log (CSV columns, in order); `panels`: which of
  /// them share a plot panel.
  /// `distributed`: the process group of an earlier phase of the same run (one rendezvous per
  /// process); null joins a new one from the options.
  Trainer(CommonOptions options, std::vector<std::string> columns,
          std::vector<std::vector<std::string>> panels,
          std::shared_ptr<Distributed> distributed = nullptr);
  ~Trainer();

  const CommonOptions &options() const { return options_; }
  Distributed &distributed() { return *distributed_; }
  std::shared_ptr<Distributed> sharedDistributed() const { return distributed_; }

  /// Everything saved in checkpoints. Register before run(); parameters and buffers of the
  /// modules are broadcast from rank 0 at start, so every rank begins identical.
  void addModule(const std::string &name, std::shared_ptr<torch::nn::Module> module);
  void addOptimizer(const std::string &name, torch::optim::Optimizer &optimizer,
                    double peakLearningRate);

  /// Runs steps [start, steps): `step(s)` trains on step s's batch (forward, backward, gradient
  /// reduction, optimizer step) and returns its metrics; `evaluate()` runs every evalEvery steps
  /// and at the end. The learning rate of every added optimizer follows warm-up + cosine.
  /// `samplesPerStep` is the global batch (for throughput). Returns the final evaluation.
  Values run(const std::function<Values(int64_t)> &step,
             const std::function<Values(bool final)> &evaluate, int64_t samplesPerStep);

  /// False when --stop-after ended the run early.
  bool finished() const { return finished_; }

  /// Where checkpoints go: out/checkpoint.pt (rank r > 0: checkpoint.rank<r>.pt).
  std::string checkpointPath() const;

private:
  void maybeResume();
  /// Throws unless every registered module is identical on all ranks.
  void verifyReplicasInSync();

  CommonOptions options_;
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> panels_;
  std::shared_ptr<Distributed> distributed_;
  TrainState state_;
  std::vector<std::pair<torch::optim::Optimizer *, double>> schedules_;
  int64_t startStep_ = 0;
  bool finished_ = false;
};

/// Averages the gradients of `module`'s parameters over the ranks.
void averageGradients(Distributed &distributed, torch::nn::Module &module);

} // namespace attn::train

#endif // MODELS_TRAIN_RUN_H
