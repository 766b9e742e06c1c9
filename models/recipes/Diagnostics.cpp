#include "models/recipes/Diagnostics.h"

#include "models/Attention.h"
#include "models/AttentionVariant.h"
#include "models/SigmaReparam.h"

#include <algorithm>
#include <numeric>

namespace attn::recipes {

void DiagnosticColumns::addTo(std::vector<std::string> &columns,
                              std::vector<std::vector<std::string>> &panels) const {
  for (const auto *kind : {&entropy, &sigma})
    if (!kind->empty()) {
      columns.insert(columns.end(), kind->begin(), kind->end());
      panels.push_back(*kind);
    }
}

DiagnosticColumns diagnosticColumns(const std::string &normalizer, int64_t depth, bool sigmaReparam) {
  DiagnosticColumns columns;
  auto kind = models::parse_normalizer(normalizer).kind;
  if (kind != models::NormalizerSpec::Kind::Ir && kind != models::NormalizerSpec::Kind::Named)
    for (int64_t layer = 0; layer < depth; ++layer)
      columns.entropy.push_back("attention_entropy_l" + std::to_string(layer));
  if (sigmaReparam)
    columns.sigma = {"sigma_min", "sigma_mean", "sigma_max"};
  return columns;
}

std::vector<double> effectiveSpectralNorms(const torch::nn::Module &module) {
  torch::NoGradGuard noGrad;
  std::vector<double> norms;
  for (const auto &child : module.modules(/*include_self=*/true)) {
    if (const auto *linear = dynamic_cast<const models::SigmaReparamLinearImpl *>(child.get()))
      norms.push_back(linear->effective_spectral_norm().item<double>());
    else if (const auto *conv = dynamic_cast<const models::SigmaReparamConv2dImpl *>(child.get()))
      norms.push_back(conv->effective_spectral_norm().item<double>());
  }
  return norms;
}

train::Values attentionDiagnostics(const DiagnosticColumns &columns, torch::nn::Module &model,
                                   models::TransformerEncoderImpl &encoder,
                                   const std::function<void()> &forward) {
  train::Values values;
  if (!columns.sigma.empty()) {
    auto norms = effectiveSpectralNorms(model);
    if (!norms.empty()) {
      values["sigma_min"] = *std::min_element(norms.begin(), norms.end());
      values["sigma_max"] = *std::max_element(norms.begin(), norms.end());
      values["sigma_mean"] = std::accumulate(norms.begin(), norms.end(), 0.0) / double(norms.size());
    }
  }
  if (columns.entropy.empty())
    return values;
  std::vector<models::AttentionImpl *> attentions;
  for (const auto &block : *encoder.blocks)
    attentions.push_back(block->as<models::TransformerBlockImpl>()->attention.get());
  std::vector<bool> recorded;
  for (auto *attention : attentions) {
    recorded.push_back(attention->options.record_entropy());
    attention->options.record_entropy(true);
  }
  bool wasTraining = model.is_training();
  model.eval();
  torch::Tensor entropy;
  try {
    torch::NoGradGuard noGrad;
    forward();
    entropy = encoder.attention_entropy().to(torch::kFloat64).mean(1); // [depth]
  } catch (...) {
    for (size_t i = 0; i < attentions.size(); ++i)
      attentions[i]->options.record_entropy(recorded[i]);
    model.train(wasTraining);
    throw;
  }
  for (size_t i = 0; i < attentions.size(); ++i)
    attentions[i]->options.record_entropy(recorded[i]);
  model.train(wasTraining);
  for (size_t layer = 0; layer < columns.entropy.size() && int64_t(layer) < entropy.size(0); ++layer)
    values[columns.entropy[layer]] = entropy[int64_t(layer)].item<double>();
  return values;
}

} // namespace attn::recipes
