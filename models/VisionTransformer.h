// Vision Transformer (Dosovitskiy et al.) on the compiled attention: patch embedding, optional
// class token and learned position embeddings, a pre-norm / hybrid-norm encoder, a linear head.
#ifndef MODELS_VISIONTRANSFORMER_H
#define MODELS_VISIONTRANSFORMER_H

#include "models/PatchEmbedding.h"
#include "models/TransformerBlock.h"

namespace attn::models {

/// ClassToken: a learned token is prepended and its final feature is classified.
/// Mean: the mean of the patch features is classified (no class token).
enum class Pooling { ClassToken, Mean };

struct VisionTransformerOptions {
  explicit VisionTransformerOptions(int64_t num_classes = 1000);
  /// ViT-Ti/16 (192 wide, 12 deep, 3 heads), ViT-S/16 (384, 12, 6), ViT-B/16 (768, 12, 12),
  /// all for 224×224×3 images; adjust image_size / patch_size / in_channels afterwards.
  static VisionTransformerOptions tiny(int64_t num_classes = 1000);
  static VisionTransformerOptions small(int64_t num_classes = 1000);
  static VisionTransformerOptions base(int64_t num_classes = 1000);

  /// The encoder these options describe.
  TransformerEncoderOptions encoder() const;

  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, embed_dim) = 768;
  TORCH_ARG(int64_t, depth) = 12;
  TORCH_ARG(int64_t, num_heads) = 12;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(Pooling, pooling) = Pooling::ClassToken;
  /// Learned absolute position embeddings; off for position-free models (e.g. the MP3
  /// position-prediction recipe), which may use attention().rope() or alibi() instead.
  TORCH_ARG(bool, position_embedding) = true;
  /// Normalizer, QK-norm, RoPE, ALiBi, masks, GQA, backend, ...; its embed_dim and num_heads
  /// are ignored (the fields above set them).
  TORCH_ARG(AttentionOptions, attention);
  TORCH_ARG(BlockNorm, norm) = BlockNorm::PreNorm;
  TORCH_ARG(double, layer_scale_init) = 0.0;
  /// σReparam for every linear (attention, MLP, head) and the patch embedding.
  TORCH_ARG(bool, sigma_reparam) = false;

};

class VisionTransformerImpl : public torch::nn::Cloneable<VisionTransformerImpl> {
public:
  explicit VisionTransformerImpl(VisionTransformerOptions options);
  void reset() override;

  /// images [B, C, H, W] → logits [B, num_classes].
  torch::Tensor forward(const torch::Tensor &images);
  /// images → final-norm token features [B, T, E]; T = 1 + patches with a class token
  /// (index 0), else patches in row-major order.
  torch::Tensor features(const torch::Tensor &images);
  /// [depth, num_heads] attention entropy of the last forward (attention().record_entropy()).
  torch::Tensor attention_entropy() const { return encoder->attention_entropy(); }

  int64_t num_patches() const;

  VisionTransformerOptions options;
  PatchEmbedding patch_embedding{nullptr};
  /// [1, 1, E] (ClassToken pooling only) and [1, T, E] (position_embedding only).
  torch::Tensor class_token, position_embedding;
  TransformerEncoder encoder{nullptr};
  Projection head{nullptr};
};
TORCH_MODULE(VisionTransformer);

} // namespace attn::models

#endif // MODELS_VISIONTRANSFORMER_H
