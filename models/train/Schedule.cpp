#include "models/train/Schedule.h"

#include <algorithm>
#include <cmath>

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

double byolMomentum(int64_t step, int64_t totalSteps, double baseMomentum) {
  double progress = totalSteps > 0 ? std::clamp(double(step) / double(totalSteps), 0.0, 1.0) : 0.0;
  return 1.0 - (1.0 - baseMomentum) * (std::cos(M_PI * progress) + 1.0) / 2.0;
}

} // namespace attn::train
