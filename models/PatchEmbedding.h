// ViT patch embedding: a Conv2d with kernel = stride = patch size, plain or σReparam.
#ifndef MODELS_PATCHEMBEDDING_H
#define MODELS_PATCHEMBEDDING_H

#include "models/SigmaReparam.h"

#include <torch/nn/modules/conv.h>

namespace attn::models {

struct PatchEmbeddingOptions {
  PatchEmbeddingOptions(int64_t in_channels, int64_t embed_dim, int64_t patch_size);
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, patch_size);
  TORCH_ARG(bool, sigma_reparam) = false;
};

class PatchEmbeddingImpl : public torch::nn::Cloneable<PatchEmbeddingImpl>,
                           public SigmaReparamConvertible {
public:
  explicit PatchEmbeddingImpl(PatchEmbeddingOptions options);
  void reset() override;

  /// images [B, C, H, W] (H, W multiples of patch_size) → tokens [B, (H/p)·(W/p), E], row-major.
  torch::Tensor forward(const torch::Tensor &images);

  void convert_to_sigma_reparam() override;
  bool is_sigma_reparam() const override { return !reparam.is_empty(); }

  PatchEmbeddingOptions options;
  /// Exactly one of the two is non-empty.
  torch::nn::Conv2d conv{nullptr};
  SigmaReparamConv2d reparam{nullptr};
};
TORCH_MODULE(PatchEmbedding);

} // namespace attn::models

#endif // MODELS_PATCHEMBEDDING_H
