// The objectives of the recipes, as functions of embeddings/logits (no models inside).
#ifndef MODELS_RECIPES_LOSSES_H
#define MODELS_RECIPES_LOSSES_H

#include <torch/torch.h>

#include <string>
#include <vector>

namespace attn::recipes {

/// SimCLR's NT-Xent: z1, z2 [N, D] are two views of N samples; each of the 2N embeddings must
/// pick its partner among the other 2N − 1 by cosine similarity / temperature.
torch::Tensor ntXentLoss(const torch::Tensor &z1, const torch::Tensor &z2, double temperature);

/// Poly-view contrastive objectives (Shidani et al., "Poly-View Contrastive Learning", ICLR 2024)
/// over views [M, N, D] (M ≥ 2 views of N samples). With s(α, i; β, j) = cos(z_i^α, z_j^β)/τ,
/// anchor (α, i) has a softmax over all M·N − 1 other embeddings (every view of every sample,
/// same-view negatives included, the anchor itself excluded):
///   ℓ_i^{α,β} = exp s(α, i; β, i) / Σ_{(γ, j) ≠ (α, i)} exp s(α, i; γ, j),
/// and the loss is the mean over the M·N anchors of
///   geometric:  −1/(M−1) · Σ_{β≠α} log ℓ_i^{α,β}        (mean log-likelihood of the positives)
///   arithmetic: −log(1/(M−1) · Σ_{β≠α} ℓ_i^{α,β})        (log of the mean likelihood)
/// For M = 2 both are exactly ntXentLoss(views[0], views[1], τ).
enum class PolyViewAggregation { Geometric, Arithmetic };
torch::Tensor polyViewLoss(const torch::Tensor &views, double temperature,
                           PolyViewAggregation aggregation);
/// The multi-crop baseline: the mean over ordered view pairs (α, β ≠ α) of the pairwise InfoNCE
/// −log softmax_j(s(α, i; β, j))_i.
torch::Tensor multiCropLoss(const torch::Tensor &views, double temperature);

/// BYOL: 2 − 2·cos(prediction, target) per sample, averaged; the target carries no gradient.
torch::Tensor byolLoss(const torch::Tensor &prediction, const torch::Tensor &target);

/// Knowledge distillation: λ·τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) + (1 − λ)·CE(s, labels).
torch::Tensor distillationLoss(const torch::Tensor &studentLogits, const torch::Tensor &teacherLogits,
                               const torch::Tensor &labels, double temperature, double mix);

/// Levenshtein distance between two sequences of tokens.
int64_t editDistance(const std::vector<std::string> &a, const std::vector<std::string> &b);
/// Character and word error rates of hypotheses against references (summed edits / summed
/// reference length), in [0, ∞).
struct ErrorRates {
  double characterErrorRate = 0, wordErrorRate = 0;
};
ErrorRates errorRates(const std::vector<std::string> &hypotheses,
                      const std::vector<std::string> &references);

} // namespace attn::recipes

#endif // MODELS_RECIPES_LOSSES_H
