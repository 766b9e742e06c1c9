// The pieces SSL recipes put on top of a ViT: an MLP head (projector / predictor) and an
// encoder that maps images to one embedding per image.
#ifndef MODELS_RECIPES_SSLMODELS_H
#define MODELS_RECIPES_SSLMODELS_H

#include "models/Projection.h"
#include "models/VisionTransformer.h"

#include <torch/nn/modules/normalization.h>

namespace attn::recipes {

/// fc2(GELU(LayerNorm(fc1(x)))); LayerNorm rather than BatchNorm so that data-parallel runs
/// compute exactly what one process does (no cross-rank batch statistics).
class MlpHeadImpl : public torch::nn::Cloneable<MlpHeadImpl> {
public:
  MlpHeadImpl(int64_t in, int64_t hidden, int64_t out, bool sigmaReparam);
  void reset() override;
  torch::Tensor forward(const torch::Tensor &x);

  int64_t in_, hidden_, out_;
  bool sigmaReparam_;
  models::Projection fc1{nullptr}, fc2{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(MlpHead);

/// ViT backbone (mean of the final token features) followed by a projector.
class SslEncoderImpl : public torch::nn::Cloneable<SslEncoderImpl> {
public:
  SslEncoderImpl(models::VisionTransformerOptions backbone, int64_t projectionHidden,
                 int64_t projectionDim);
  void reset() override;
  /// images → projections [B, projectionDim].
  torch::Tensor forward(const torch::Tensor &images);

  models::VisionTransformerOptions backboneOptions_;
  int64_t projectionHidden_, projectionDim_;
  models::VisionTransformer backbone{nullptr};
  MlpHead projector{nullptr};
};
TORCH_MODULE(SslEncoder);

} // namespace attn::recipes

#endif // MODELS_RECIPES_SSLMODELS_H
