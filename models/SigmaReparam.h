// σReparam layers (arXiv:2303.06296), faithful to apple/ml-sigma-reparam's SNLinear / SNConv2d:
// Ŵ = γ/σ(W)·W with σ(W) from one power-iteration step per forward (eval takes it without storing u),
// computed by the torch op attn::reparam_linear.
#ifndef MODELS_SIGMAREPARAM_H
#define MODELS_SIGMAREPARAM_H

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/expanding_array.h>
#include <torch/arg.h>

namespace attn::models {

/// Fills `tensor` with N(0, std²) truncated to [lower, upper] (absolute bounds, as
/// torch.nn.init.trunc_normal_), by inverse-CDF sampling. Returns `tensor`.
torch::Tensor trunc_normal_(torch::Tensor tensor, double std, double lower = -2.0,
                            double upper = 2.0);

struct SigmaReparamLinearOptions {
  SigmaReparamLinearOptions(int64_t in_features, int64_t out_features);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  /// The weight is trunc-normal with std 0.02·init_multiplier (ml-sigma-reparam's default).
  TORCH_ARG(double, init_multiplier) = 1.0;
};

/// y = x·(γ/σ(W)·W)ᵀ + b. Parameters `weight` [out, in], `bias` [out] (if enabled) and `gamma`
/// [1], initialised to the initial spectral norm so that Ŵ = W at step 0; buffer `u` [in], the
/// weight's top right-singular vector at initialisation, updated once per training forward.
class SigmaReparamLinearImpl : public torch::nn::Cloneable<SigmaReparamLinearImpl> {
public:
  SigmaReparamLinearImpl(int64_t in_features, int64_t out_features)
      : SigmaReparamLinearImpl(SigmaReparamLinearOptions(in_features, out_features)) {}
  explicit SigmaReparamLinearImpl(SigmaReparamLinearOptions options);

  void reset() override;
  void pretty_print(std::ostream &stream) const override;

  /// x [..., in] → [..., out]; updates `u` when the module is training.
  torch::Tensor forward(const torch::Tensor &x);

  /// Takes over an existing weight [out, in] (and bias): u = its top right-singular vector,
  /// γ = σ(W), so the layer computes exactly what x·Wᵀ + b did. Used by
  /// convert_to_sigma_reparam.
  void reset_from(const torch::Tensor &weight, const torch::Tensor &bias);
  /// σ(W) = ‖W·u‖ for the current u (no update, no gradient).
  torch::Tensor spectral_norm() const;
  /// γ/σ(W): the spectral norm of the weight the layer applies (σReparam's diagnostic).
  torch::Tensor effective_spectral_norm() const;

  SigmaReparamLinearOptions options;
  torch::Tensor weight, bias, gamma, u;
};
TORCH_MODULE(SigmaReparamLinear);

struct SigmaReparamConv2dOptions {
  SigmaReparamConv2dOptions(int64_t in_channels, int64_t out_channels,
                            torch::ExpandingArray<2> kernel_size);
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  TORCH_ARG(torch::ExpandingArray<2>, padding) = 0;
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(double, init_multiplier) = 1.0;
};

/// Conv2d whose kernel [out, in, kh, kw] is σReparam'd as the matrix [out, in·kh·kw] (as
/// ml-sigma-reparam's SNConv2d). Runs as unfold → attn::reparam_linear → reshape, so the
/// same op and power iteration serve both layers.
class SigmaReparamConv2dImpl : public torch::nn::Cloneable<SigmaReparamConv2dImpl> {
public:
  explicit SigmaReparamConv2dImpl(SigmaReparamConv2dOptions options);

  void reset() override;
  void pretty_print(std::ostream &stream) const override;

  /// x [B, in, H, W] → [B, out, H', W'].
  torch::Tensor forward(const torch::Tensor &x);

  /// Takes over an existing kernel [out, in, kh, kw] (and bias), like SigmaReparamLinear.
  void reset_from(const torch::Tensor &weight, const torch::Tensor &bias);
  torch::Tensor spectral_norm() const;
  torch::Tensor effective_spectral_norm() const;

  SigmaReparamConv2dOptions options;
  /// weight [out, in, kh, kw]; u [in·kh·kw]; gamma [1].
  torch::Tensor weight, bias, gamma, u;
};
TORCH_MODULE(SigmaReparamConv2d);

/// Implemented by the layers of this folder that hold a plain Linear/Conv2d which can be
/// swapped for its σReparam version in place (Projection, PatchEmbedding). A LibTorch parent
/// calls its children through typed holders, so a child can only be swapped by its owner.
class SigmaReparamConvertible {
public:
  virtual ~SigmaReparamConvertible() = default;
  /// Swaps the plain layer for a σReparam one computing the same function (no-op if done).
  virtual void convert_to_sigma_reparam() = 0;
  virtual bool is_sigma_reparam() const = 0;
};

/// Swaps every Linear (Projection) and the patch-embedding Conv2d in `module`'s tree for σReparam
/// layers that compute the same function at the moment of conversion (γ = σ(W)). Returns how
/// many layers were converted. Throws if the tree holds a bare torch::nn::Linear, which cannot be
/// swapped from outside its owner; build such layers as attn::models::Projection instead.
int64_t convert_to_sigma_reparam(torch::nn::Module &module);

} // namespace attn::models

#endif // MODELS_SIGMAREPARAM_H
