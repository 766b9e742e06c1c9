// The numbers that change over a run: learning rate (linear warm-up, cosine decay), the BYOL
// target's EMA momentum and the scaling rules that keep both right when the batch size changes
// ("How to Scale Your EMA", Busbridge et al. 2023).
#ifndef MODELS_TRAIN_SCHEDULE_H
#define MODELS_TRAIN_SCHEDULE_H

#include <cstdint>

namespace attn::train {

/// Linear warm-up over `warmupSteps` from 0 to `peak`, then cosine decay to `peak`·`finalFraction`
/// at `totalSteps`. `step` is 0-based (the step about to run).
double cosineLearningRate(int64_t step, int64_t totalSteps, int64_t warmupSteps, double peak,
                          double finalFraction = 0.0);

/// The EMA scaling rule: with a batch κ = batch/referenceBatch times the reference, the
/// momentum ρ becomes ρ̂ = ρ^κ (so the target moves as far per example seen).
double scaledEmaMomentum(double momentum, double kappa);
/// The matching learning-rate rule for the online network: SGD's linear rule η̂ = κ·η.
double scaledLearningRate(double learningRate, double kappa);

/// BYOL's momentum schedule: τ(step) = 1 − (1 − τ_base)·(cos(π·step/total) + 1)/2.
double byolMomentum(int64_t step, int64_t totalSteps, double baseMomentum);

} // namespace attn::train

#endif // MODELS_TRAIN_SCHEDULE_H
