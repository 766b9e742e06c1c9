// BYOV's predictor: Bayes by Backprop (Blundell et al., "Weight Uncertainty in Neural Networks",
// ICML 2015) in BYOL's predictor, as "Bootstrap Your Own Variance" (Turishcheva et al., 2023)
// combines them. Every weight and bias has a factorised Gaussian posterior
// q(w) = N(μ, σ²), σ = softplus(ρ), sampled afresh by reparameterisation (w = μ + σ·ε) at every
// forward pass; the prior is N(0, σ_p²), and training adds KL(q ‖ p) to the loss. The recipe
// draws ε from posteriorSampleGenerator(seed, step), so every rank takes the same weight sample
// and evaluations (which sample too) leave the training run's samples alone.
#ifndef MODELS_RECIPES_BAYESIANHEAD_H
#define MODELS_RECIPES_BAYESIANHEAD_H

#include "models/recipes/SslModels.h"

#include <torch/torch.h>

namespace attn::recipes {

class BayesianLinearImpl : public torch::nn::Cloneable<BayesianLinearImpl> {
public:
  /// μ starts as torch's Linear initialisation, ρ at softplus⁻¹(initialSigma).
  BayesianLinearImpl(int64_t in, int64_t out, double priorSigma, double initialSigma = 0.01);
  void reset() override;
  /// x [..., in] → [..., out] with one weight sample; `useMean`: the posterior mean instead.
  /// ε comes from `generator` (drawn on the CPU, then moved) when given, else from torch's
  /// default generator.
  torch::Tensor forward(const torch::Tensor &x, bool useMean = false, at::Generator *generator = nullptr);
  /// KL(q ‖ N(0, σ_p²)) summed over every weight and bias, in closed form:
  /// Σ log(σ_p/σ) + (σ² + μ²)/(2σ_p²) − ½.
  torch::Tensor kl() const;

  int64_t in_, out_;
  double priorSigma_, initialSigma_;
  torch::Tensor weightMu, weightRho, biasMu, biasRho;
};
TORCH_MODULE(BayesianLinear);

/// BYOL's predictor with Bayesian linears: fc2(ReLU(BN(fc1(x)))), BN over the global batch.
class BayesianMlpHeadImpl : public torch::nn::Cloneable<BayesianMlpHeadImpl> {
public:
  BayesianMlpHeadImpl(int64_t in, int64_t hidden, int64_t out, double priorSigma);
  void reset() override;
  torch::Tensor forward(const torch::Tensor &x, bool useMean = false, at::Generator *generator = nullptr);
  torch::Tensor kl() const;

  int64_t in_, hidden_, out_;
  double priorSigma_;
  BayesianLinear fc1{nullptr}, fc2{nullptr};
  SyncBatchNorm1d norm{nullptr};
};
TORCH_MODULE(BayesianMlpHead);

/// Mean posterior standard deviation softplus(ρ) over every weight and bias of `head`.
double meanPosteriorSigma(const BayesianMlpHeadImpl &head);

/// BYOV's predictive uncertainty: `samples` forward passes of `head` (eval mode: running
/// BatchNorm statistics, so the spread comes from the weight posterior alone) on `inputs`
/// [N, in]; the standard deviation over the samples, averaged over rows and outputs. The weight
/// samples come from `generator` when given.
double predictiveStd(BayesianMlpHeadImpl &head, const torch::Tensor &inputs, int64_t samples = 16,
                     at::Generator *generator = nullptr);

/// A CPU generator for the predictor's weight samples at training step `step` (evaluations: −1),
/// a function of (seed, step) alone: the same on every rank, whatever else drew random numbers.
/// Its own stream, apart from the augmentations' and the sampler's.
at::Generator posteriorSampleGenerator(uint64_t seed, int64_t step);

} // namespace attn::recipes

#endif // MODELS_RECIPES_BAYESIANHEAD_H
