#include "models/recipes/SslModels.h"

#include "models/recipes/Vision.h"

namespace attn::recipes {

MlpHeadImpl::MlpHeadImpl(int64_t in, int64_t hidden, int64_t out, bool sigmaReparam)
    : in_(in), hidden_(hidden), out_(out), sigmaReparam_(sigmaReparam) {
  reset();
}

void MlpHeadImpl::reset() {
  fc1 = register_module("fc1", models::Projection(models::ProjectionOptions(in_, hidden_).sigma_reparam(sigmaReparam_)));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden_})));
  fc2 = register_module("fc2", models::Projection(models::ProjectionOptions(hidden_, out_).sigma_reparam(sigmaReparam_)));
}

torch::Tensor MlpHeadImpl::forward(const torch::Tensor &x) {
  return fc2->forward(torch::gelu(norm->forward(fc1->forward(x))));
}

SslEncoderImpl::SslEncoderImpl(models::VisionTransformerOptions backbone, int64_t projectionHidden,
                               int64_t projectionDim)
    : backboneOptions_(std::move(backbone)), projectionHidden_(projectionHidden),
      projectionDim_(projectionDim) {
  reset();
}

void SslEncoderImpl::reset() {
  backbone = register_module("backbone", models::VisionTransformer(backboneOptions_));
  projector = register_module("projector", MlpHead(backboneOptions_.embed_dim(), projectionHidden_,
                                                   projectionDim_, backboneOptions_.sigma_reparam()));
}

torch::Tensor SslEncoderImpl::forward(const torch::Tensor &images) {
  return projector->forward(pooledFeatures(backbone, images));
}

} // namespace attn::recipes
