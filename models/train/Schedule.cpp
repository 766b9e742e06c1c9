#include "models/train/Schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace attn::train {

double cosineLearningRate(int64_t step, int64_t totalSteps, int64_t warmupSteps, double peak,
                          double finalFraction) {
  if (warmupSteps > 0 && step < warmupSteps)
    return peak * double(step + 1) / double(warmupSteps);
  int64_t decaySteps = std::max<int64_t>(1, totalSteps - warmupSteps);
  double progress = std::clamp(double(step - warmupSteps) / double(decaySteps), 0.0, 1.0);
  double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (finalFraction + (1.0 - finalFraction) * cosine);
}

double scaledEmaMomentum(double momentum, double kappa) { return std::pow(momentum, kappa); }

double scaledLearningRate(double learningRate, double kappa) { return learningRate * kappa; }

AdamHyperparameters scaledAdam(const AdamHyperparameters &reference, double kappa) {
  if (!(kappa > 0))
    throw std::invalid_argument("the batch scale κ must be positive");
  if (kappa * (1 - reference.beta1) > 1 || kappa * (1 - reference.beta2) > 1)
    throw std::invalid_argument("Adam's scaling rule needs κ·(1 − β) ≤ 1 for both betas; κ = " +
                                std::to_string(kappa) + " is too large for β1 = " +
                                std::to_string(reference.beta1));
  const double root = std::sqrt(kappa);
  AdamHyperparameters scaled = reference;
  scaled.learningRate = reference.learningRate * root;
  scaled.beta1 = 1 - kappa * (1 - reference.beta1);
  scaled.beta2 = 1 - kappa * (1 - reference.beta2);
  scaled.epsilon = reference.epsilon / root;
  scaled.weightDecay = reference.weightDecay * root;
  auto steps = [&](int64_t count) -> int64_t {
    if (count <= 0)
      return count;
    return std::max<int64_t>(1, std::llround(double(count) / kappa));
  };
  scaled.steps = steps(reference.steps);
  scaled.warmupSteps = reference.warmupSteps > 0 ? steps(reference.warmupSteps) : 0;
  return scaled;
}

double byolMomentum(int64_t step, int64_t totalSteps, double baseMomentum) {
  double progress = totalSteps > 0 ? std::clamp(double(step) / double(totalSteps), 0.0, 1.0) : 0.0;
  return 1.0 - (1.0 - baseMomentum) * (std::cos(M_PI * progress) + 1.0) / 2.0;
}

} // namespace attn::train
