// Elastic weight consolidation (Kirkpatrick et al., "Overcoming catastrophic forgetting in
// neural networks", PNAS 2017) for fine-tuning a self-supervised backbone: the fine-tuning loss
// gains (λ/2)·Σ_i F_i (θ_i − θ*_i)², θ* the checkpoint's weights and F the diagonal Fisher
// information at θ*. A self-supervised checkpoint has no labels and no trained head, so F is
// the Fisher of its representation: the Gaussian feature model p(z | x) = N(f_θ*(x), I) over
// the backbone's pooled features, whose Fisher is E_x[J(x)ᵀJ(x)] (J = ∂f/∂θ). It is estimated
// without per-sample Jacobians: with Rademacher noise ε (E[εεᵀ] = I), g = ∇_θ Σ_n ⟨f(x_n), ε_n⟩
// has E[g_i²] = Σ_n (J_nᵀJ_n)_ii, so Σ_batches g² / N is unbiased (exact when f is linear in θ
// and a batch holds one sample).
#ifndef MODELS_RECIPES_EWC_H
#define MODELS_RECIPES_EWC_H

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace attn::recipes {

/// The diagonal Fisher of the Gaussian feature model of `features` (a function of `model`'s
/// parameters), averaged over the samples of `batches`, for every trainable parameter of
/// `model` by name (zero where the features do not depend on it). `seed` fixes ε.
torch::OrderedDict<std::string, torch::Tensor>
featureFisherDiagonal(torch::nn::Module &model,
                      const std::function<torch::Tensor(const torch::Tensor &)> &features,
                      const std::vector<torch::Tensor> &batches, uint64_t seed);

/// (λ/2)·Σ_i F_i (θ_i − θ*_i)² over the parameters it was built with.
class EwcPenalty {
public:
  EwcPenalty() = default;
  /// Anchors θ* are copies of `model`'s parameters now; only the names in `fisher` take part.
  EwcPenalty(torch::nn::Module &model, torch::OrderedDict<std::string, torch::Tensor> fisher, double lambda);
  bool active() const { return lambda_ > 0 && !parameters_.empty(); }
  torch::Tensor operator()() const;
  /// Σ_i F_i over the parameters, for the log.
  double fisherTotal() const;

private:
  std::vector<torch::Tensor> parameters_, anchors_, fisher_;
  double lambda_ = 0;
};

} // namespace attn::recipes

#endif // MODELS_RECIPES_EWC_H
