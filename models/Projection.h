// A linear layer that is either plain or σReparam, and can be converted in place. All the
// linears of the models in this folder are Projections, so convert_to_sigma_reparam reaches them.
#ifndef MODELS_PROJECTION_H
#define MODELS_PROJECTION_H

#include "models/SigmaReparam.h"

#include <torch/nn/modules/linear.h>

namespace attn::models {

struct ProjectionOptions {
  ProjectionOptions(int64_t in_features, int64_t out_features);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(bool, sigma_reparam) = false;
  /// Both kinds start trunc-normal with std 0.02·init_multiplier and a zero bias (ViT init).
  TORCH_ARG(double, init_multiplier) = 1.0;
};

class ProjectionImpl : public torch::nn::Cloneable<ProjectionImpl>,
                       public SigmaReparamConvertible {
public:
  ProjectionImpl(int64_t in_features, int64_t out_features)
      : ProjectionImpl(ProjectionOptions(in_features, out_features)) {}
  explicit ProjectionImpl(ProjectionOptions options);

  void reset() override;
  void pretty_print(std::ostream &stream) const override;

  /// x [..., in] → [..., out].
  torch::Tensor forward(const torch::Tensor &x);

  void convert_to_sigma_reparam() override;
  bool is_sigma_reparam() const override { return !reparam.is_empty(); }
  /// The weight [out, in] as stored (W, not Ŵ, for a σReparam layer).
  const torch::Tensor &weight() const;

  ProjectionOptions options;
  /// Exactly one of the two is non-empty.
  torch::nn::Linear linear{nullptr};
  SigmaReparamLinear reparam{nullptr};
};
TORCH_MODULE(Projection);

} // namespace attn::models

#endif // MODELS_PROJECTION_H
