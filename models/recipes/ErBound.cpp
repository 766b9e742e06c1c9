#include "models/recipes/ErBound.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace attn::recipes {
namespace F = torch::nn::functional;

double logModifiedBesselI(double order, double x) {
  if (!(order >= 0) || !(x > 0) || !std::isfinite(x))
    throw std::invalid_argument("logModifiedBesselI: needs order ≥ 0 and finite x > 0, got order " +
                                std::to_string(order) + ", x " + std::to_string(x));
  // I_v(x) = Σ_k (x/2)^{2k+v} / (k! Γ(k+v+1)); the terms rise until k ≈ x/2, then fall faster
  // than geometrically. Accumulate relative to the largest term seen so far.
  const double logHalfX = std::log(x / 2);
  double maxTerm = -std::numeric_limits<double>::infinity(), sum = 0;
  for (int64_t k = 0; k < 100000; ++k) {
    double term = (2.0 * double(k) + order) * logHalfX - std::lgamma(double(k) + 1) -
                  std::lgamma(double(k) + order + 1);
    if (term > maxTerm) {
      sum = sum * std::exp(maxTerm - term) + 1;
      maxTerm = term;
    } else {
      double relative = std::exp(term - maxTerm);
      sum += relative;
      if (double(k) > x && relative < 1e-17 * sum)
        break;
    }
  }
  return maxTerm + std::log(sum);
}

double logVmfNormaliser(int64_t dimension, double kappa) {
  if (dimension < 2 || !(kappa > 0))
    throw std::invalid_argument("logVmfNormaliser: needs dimension ≥ 2 and κ > 0");
  const double v = 0.5 * double(dimension) - 1;
  return v * std::log(kappa) - 0.5 * double(dimension) * std::log(2 * M_PI) -
         logModifiedBesselI(v, kappa);
}

namespace {
torch::Tensor unitRows(const torch::Tensor &x) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) > 0 && x.size(1) >= 2,
              "ER bound: embeddings must be [N, d] with N ≥ 1 and d ≥ 2, got ", x.sizes());
  // float32 at least: exp(κ·cos) sums in bfloat16 lose the entropy's small differences.
  auto y = x.scalar_type() == torch::kFloat64 ? x : x.to(torch::kFloat32);
  return F::normalize(y, F::NormalizeFuncOptions().dim(1));
}
} // namespace

torch::Tensor vmfKdeEntropy(const torch::Tensor &embeddings, double kappa) {
  auto z = unitRows(embeddings);
  const int64_t n = z.size(0);
  // log p̂(z_i) = log C_d(κ) − log N + logsumexp_j κ z_iᵀz_j  (the sample itself included).
  auto logDensity = torch::logsumexp(kappa * z.matmul(z.t()), 1) - std::log(double(n)) +
                    logVmfNormaliser(z.size(1), kappa);
  return -logDensity.mean();
}

torch::Tensor vmfReconstruction(const torch::Tensor &prediction, const torch::Tensor &target,
                                double kappa) {
  TORCH_CHECK(prediction.sizes() == target.sizes(), "ER bound: prediction ", prediction.sizes(),
              " and target ", target.sizes(), " differ");
  auto p = unitRows(prediction), t = unitRows(target).to(p.scalar_type());
  return logVmfNormaliser(p.size(1), kappa) + kappa * (p * t).sum(1).mean();
}

ErTerms erBound(const torch::Tensor &embeddings, const torch::Tensor &prediction,
                const torch::Tensor &target, double kappa) {
  return {vmfKdeEntropy(embeddings, kappa), vmfReconstruction(prediction, target, kappa)};
}

} // namespace attn::recipes
