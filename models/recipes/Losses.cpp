#include "models/recipes/Losses.h"

#include <limits>
#include <sstream>

namespace attn::recipes {
namespace F = torch::nn::functional;

static torch::Tensor unit(const torch::Tensor &z) {
  return F::normalize(z, F::NormalizeFuncOptions().dim(-1).eps(1e-8));
}

torch::Tensor ntXentLoss(const torch::Tensor &z1, const torch::Tensor &z2, double temperature) {
  int64_t n = z1.size(0);
  auto z = unit(torch::cat({z1, z2}, 0));
  auto logits = z.matmul(z.t()) / temperature;
  // An embedding is never its own candidate.
  auto self = torch::eye(2 * n, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  logits = logits.masked_fill(self, -std::numeric_limits<double>::infinity());
  auto partner = torch::cat({torch::arange(n, 2 * n), torch::arange(0, n)}).to(z.device());
  return F::cross_entropy(logits, partner);
}

torch::Tensor polyViewLoss(const torch::Tensor &views, double temperature,
                           PolyViewAggregation aggregation) {
  TORCH_CHECK(views.dim() == 3 && views.size(0) >= 2, "polyViewLoss: views must be [M >= 2, N, D]");
  int64_t m = views.size(0), n = views.size(1);
  // Row α·N + i is view α of sample i.
  auto z = unit(views).reshape({m * n, views.size(2)});
  auto logits = z.matmul(z.t()) / temperature;
  auto self = torch::eye(m * n, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  logits = logits.masked_fill(self, -std::numeric_limits<double>::infinity());
  auto logLikelihood = F::log_softmax(logits, F::LogSoftmaxFuncOptions(1)); // [M·N, M·N]
  // positives[α·N + i] = the columns β·N + i for β ≠ α, in increasing β.
  auto anchor = torch::arange(m * n, torch::TensorOptions().dtype(torch::kInt64).device(z.device()));
  auto viewOf = anchor.div(n, "floor").unsqueeze(1), sampleOf = anchor.remainder(n).unsqueeze(1);
  auto shift = torch::arange(1, m, anchor.options()).unsqueeze(0);       // [1, M−1]
  auto positives = (viewOf + shift).remainder(m) * n + sampleOf;           // [M·N, M−1]
  auto positive = logLikelihood.gather(1, positives);
  auto perAnchor = aggregation == PolyViewAggregation::Geometric
                       ? positive.mean(1)
                       : torch::logsumexp(positive, 1) - std::log(double(m - 1));
  return -perAnchor.mean();
}

torch::Tensor multiCropLoss(const torch::Tensor &views, double temperature) {
  TORCH_CHECK(views.dim() == 3 && views.size(0) >= 2, "multiCropLoss: views must be [M >= 2, N, D]");
  int64_t m = views.size(0), n = views.size(1);
  auto z = unit(views);
  auto targets = torch::arange(n, torch::TensorOptions().dtype(torch::kInt64).device(z.device()));
  std::vector<torch::Tensor> losses;
  for (int64_t alpha = 0; alpha < m; ++alpha)
    for (int64_t beta = 0; beta < m; ++beta)
      if (alpha != beta)
        losses.push_back(F::cross_entropy(z[alpha].matmul(z[beta].t()) / temperature, targets));
  return torch::stack(losses).mean();
}

torch::Tensor byolLoss(const torch::Tensor &prediction, const torch::Tensor &target) {
  auto cosine = (unit(prediction) * unit(target.detach())).sum(-1);
  return (2 - 2 * cosine).mean();
}

torch::Tensor distillationLoss(const torch::Tensor &studentLogits, const torch::Tensor &teacherLogits,
                               const torch::Tensor &labels, double temperature, double mix) {
  auto teacher = F::softmax(teacherLogits.detach() / temperature, F::SoftmaxFuncOptions(-1));
  auto studentLog = F::log_softmax(studentLogits / temperature, F::LogSoftmaxFuncOptions(-1));
  // KL(teacher ‖ student) per sample, batch mean.
  auto kl = (teacher * (teacher.clamp_min(1e-12).log() - studentLog)).sum(-1).mean();
  auto loss = mix * temperature * temperature * kl;
  if (mix < 1.0)
    loss = loss + (1.0 - mix) * F::cross_entropy(studentLogits, labels);
  return loss;
}

int64_t editDistance(const std::vector<std::string> &a, const std::vector<std::string> &b) {
  std::vector<int64_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    previous[j] = int64_t(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = int64_t(i);
    for (size_t j = 1; j <= b.size(); ++j)
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(previous, current);
  }
  return previous[b.size()];
}

static std::vector<std::string> characters(const std::string &text) {
  std::vector<std::string> out;
  for (char c : text)
    out.emplace_back(1, c);
  return out;
}

static std::vector<std::string> words(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string word; in >> word;)
    out.push_back(word);
  return out;
}

ErrorRates errorRates(const std::vector<std::string> &hypotheses,
                      const std::vector<std::string> &references) {
  TORCH_CHECK(hypotheses.size() == references.size(), "errorRates: sizes differ");
  int64_t charEdits = 0, charTotal = 0, wordEdits = 0, wordTotal = 0;
  for (size_t i = 0; i < references.size(); ++i) {
    auto refChars = characters(references[i]), refWords = words(references[i]);
    charEdits += editDistance(characters(hypotheses[i]), refChars);
    wordEdits += editDistance(words(hypotheses[i]), refWords);
    charTotal += int64_t(refChars.size());
    wordTotal += int64_t(refWords.size());
  }
  return {double(charEdits) / double(std::max<int64_t>(1, charTotal)),
          double(wordEdits) / double(std::max<int64_t>(1, wordTotal))};
}

} // namespace attn::recipes
