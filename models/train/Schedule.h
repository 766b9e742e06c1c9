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
/// The matching learning-rate rule for the online network under SGD: the linear rule η̂ = κ·η.
double scaledLearningRate(double learningRate, double kappa);

/// AdamW's hyperparameters and step counts at one batch size.
struct AdamHyperparameters {
  double learningRate = 1e-3, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8, weightDecay = 0;
  int64_t steps = 0, warmupSteps = 0;
};

/// Adam's square-root scaling rule (Malladi et al. 2022, the optimizer rule "How to Scale Your
/// EMA" pairs with ρ̂ = ρ^κ for Adam): for κ times the batch, η̂ = √κ·η, β̂ = 1 − κ·(1 − β) for both
/// betas, ε̂ = ε/√κ, λ̂ = √κ·λ (AdamW's decay is applied as η·λ), and the same number of examples:
/// steps and warm-up divided by κ (rounded, at least one step). Throws std::invalid_argument
/// when κ·(1 − β) > 1, where the rule has no valid β̂ (a negative one).
AdamHyperparameters scaledAdam(const AdamHyperparameters &reference, double kappa);

/// BYOL's momentum schedule: τ(step) = 1 − (1 − τ_base)·(cos(π·step/total) + 1)/2.
double byolMomentum(int64_t step, int64_t totalSteps, double baseMomentum);

} // namespace attn::train

#endif // MODELS_TRAIN_SCHEDULE_H
