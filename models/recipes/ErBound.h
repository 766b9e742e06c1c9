// The entropy–reconstruction (ER) bound on the mutual information between two views'
// embeddings, from Rodríguez-Gálvez et al., "The Role of Entropy and Reconstruction in
// Multi-View Self-Supervised Learning" (ICML 2023):
//     I(Z₁; Z₂) ≥ H(Z₂) + E[log q(Z₂ | Z₁)],
// with embeddings on the unit sphere S^{d−1}. The entropy is Joe's (1989) resubstitution
// estimate — the mean of −log p̂ over the batch, p̂ the kernel density estimate with a von
// Mises–Fisher kernel of concentration κ, each sample included in its own estimate — and the
// reconstruction density q(z₂ | z₁) is a vMF centred on the (normalised) prediction from z₁:
//     Ĥ(Z) = −1/N Σ_i log( 1/N Σ_j C_d(κ) exp(κ z_iᵀz_j) ),
//     log q(z₂ | z₁) = log C_d(κ) + κ cos(ẑ(z₁), z₂),
//     C_d(κ) = κ^{d/2−1} / ((2π)^{d/2} I_{d/2−1}(κ))   (the vMF normaliser; I: modified Bessel).
// The constants do not change the gradients; they are kept so that the logged bound is the
// paper's estimate in nats.
#ifndef MODELS_RECIPES_ERBOUND_H
#define MODELS_RECIPES_ERBOUND_H

#include <torch/torch.h>

namespace attn::recipes {

/// log I_v(x), the modified Bessel function of the first kind, for v ≥ 0 and x > 0, summed as a
/// power series in log space (no overflow for large orders, where I_v underflows a double).
double logModifiedBesselI(double order, double x);

/// log C_d(κ) of the von Mises–Fisher density on S^{d−1}; d ≥ 2, κ > 0.
double logVmfNormaliser(int64_t dimension, double kappa);

/// Ĥ(Z) of the rows of `embeddings` [N, d] (normalised here), vMF kernel of concentration κ.
torch::Tensor vmfKdeEntropy(const torch::Tensor &embeddings, double kappa);

/// Mean over rows of log q(target | prediction) = log C_d(κ) + κ cos(prediction, target).
torch::Tensor vmfReconstruction(const torch::Tensor &prediction, const torch::Tensor &target,
                                double kappa);

/// The two terms of the bound for one direction (view a's prediction of view b's target).
struct ErTerms {
  torch::Tensor entropy, reconstruction;
  /// −(Ĥ + reconstruction): the loss that maximises the bound.
  torch::Tensor loss() const { return -(entropy + reconstruction); }
};
/// The bound with the entropy estimated on `embeddings` (the branch that carries gradients) and
/// the reconstruction of `target` from `prediction`.
ErTerms erBound(const torch::Tensor &embeddings, const torch::Tensor &prediction,
                const torch::Tensor &target, double kappa);

} // namespace attn::recipes

#endif // MODELS_RECIPES_ERBOUND_H
