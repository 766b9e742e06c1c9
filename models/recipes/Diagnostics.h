// What the recipes log beside their losses: the attention entropy of each layer (the
// diagnostic σReparam's paper tracks: entropy collapse) and the σReparam layers' spectral norms
// γ/σ(W) of the weights they apply. Both come from functions the models already have:
// AttentionImpl's record_entropy / TransformerEncoderImpl::attention_entropy() and the σReparam
// layers' effective_spectral_norm().
#ifndef MODELS_RECIPES_DIAGNOSTICS_H
#define MODELS_RECIPES_DIAGNOSTICS_H

#include "models/TransformerBlock.h"
#include "models/train/Run.h"

#include <functional>
#include <string>
#include <vector>

namespace attn::recipes {

struct DiagnosticColumns {
  /// attention_entropy_l0 … l{depth−1}: empty for normalizers without an entropy reference
  /// (user-written IR, named variants).
  std::vector<std::string> entropy;
  /// sigma_min, sigma_mean, sigma_max (γ/σ over every σReparam layer): empty without σReparam.
  std::vector<std::string> sigma;

  /// Appends the columns to a Trainer's columns and one plot panel per kind.
  void addTo(std::vector<std::string> &columns, std::vector<std::vector<std::string>> &panels) const;
};
DiagnosticColumns diagnosticColumns(const std::string &normalizer, int64_t depth, bool sigmaReparam);

/// γ/σ(W) of every σReparam layer (linear and conv) inside `module`, in module order.
std::vector<double> effectiveSpectralNorms(const torch::nn::Module &module);

/// The columns' values: `forward` runs `model` (eval mode, no gradient) on evaluation inputs
/// while each attention of `encoder` records its entropy; each layer's figure is the mean over
/// its heads (nats). The model's mode and the attentions' record_entropy are restored.
train::Values attentionDiagnostics(const DiagnosticColumns &columns, torch::nn::Module &model,
                                   models::TransformerEncoderImpl &encoder,
                                   const std::function<void()> &forward);

} // namespace attn::recipes

#endif // MODELS_RECIPES_DIAGNOSTICS_H
