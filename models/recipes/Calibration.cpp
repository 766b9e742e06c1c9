#include "models/recipes/Calibration.h"

#include <cmath>
#include <vector>

namespace attn::recipes {

namespace {
void checkShapes(const torch::Tensor &probabilities, const torch::Tensor &labels) {
  TORCH_CHECK(probabilities.dim() == 2 && labels.dim() == 1 && probabilities.size(0) == labels.size(0) &&
                  probabilities.size(0) > 0,
              "calibration: probabilities [N, C] and labels [N] expected, got ", probabilities.sizes(),
              " and ", labels.sizes());
}
} // namespace

double expectedCalibrationError(const torch::Tensor &probabilities, const torch::Tensor &labels,
                                int64_t bins) {
  checkShapes(probabilities, labels);
  TORCH_CHECK(bins > 0, "expectedCalibrationError: bins must be positive, got ", bins);
  auto p = probabilities.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  auto [confidence, predicted] = p.max(1);
  auto correct = predicted.eq(labels.to(torch::kCPU)).to(torch::kFloat64).contiguous();
  confidence = confidence.contiguous();
  const int64_t n = p.size(0);
  std::vector<double> count(bins, 0), accuracy(bins, 0), meanConfidence(bins, 0);
  const double *c = confidence.data_ptr<double>(), *ok = correct.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    // Bin b holds confidences in (b/bins, (b+1)/bins].
    int64_t b = std::min<int64_t>(bins - 1, std::max<int64_t>(0, int64_t(std::ceil(c[i] * double(bins))) - 1));
    count[b] += 1;
    accuracy[b] += ok[i];
    meanConfidence[b] += c[i];
  }
  double ece = 0;
  for (int64_t b = 0; b < bins; ++b)
    if (count[b] > 0)
      ece += std::abs(accuracy[b] - meanConfidence[b]) / double(n); // n_b/N · |Σok/n_b − Σc/n_b|
  return ece;
}

double brierScore(const torch::Tensor &probabilities, const torch::Tensor &labels) {
  checkShapes(probabilities, labels);
  auto p = probabilities.detach().to(torch::kCPU, torch::kFloat64);
  auto oneHot = torch::one_hot(labels.to(torch::kCPU, torch::kInt64), p.size(1)).to(torch::kFloat64);
  return (p - oneHot).pow(2).sum(1).mean().item<double>();
}

} // namespace attn::recipes
