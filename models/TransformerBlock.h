// The pieces of a transformer encoder: LayerScale, the MLP, a pre-norm / hybrid-norm block, and
// a stack of blocks with a final LayerNorm.
#ifndef MODELS_TRANSFORMERBLOCK_H
#define MODELS_TRANSFORMERBLOCK_H

#include "models/Attention.h"

#include <torch/nn/modules/container/modulelist.h>

namespace attn::models {

/// y = x·diag(λ), λ learned per channel (CaiT).
struct LayerScaleOptions {
  LayerScaleOptions(int64_t dim, double init_value = 1e-5);
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, init_value);
};

class LayerScaleImpl : public torch::nn::Cloneable<LayerScaleImpl> {
public:
  explicit LayerScaleImpl(LayerScaleOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor &x);

  LayerScaleOptions options;
  torch::Tensor scale;
};
TORCH_MODULE(LayerScale);

/// fc2(GELU(fc1(x))).
struct MlpOptions {
  MlpOptions(int64_t dim, int64_t hidden_dim);
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, hidden_dim);
  TORCH_ARG(bool, sigma_reparam) = false;
};

class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
public:
  explicit MlpImpl(MlpOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor &x);

  MlpOptions options;
  Projection fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

/// PreNorm:    x += attn(LN(x));      x += mlp(LN(x))
/// HybridNorm: x += LN(attn(LN(x)));  x += mlp(LN(x))
///   (the sigmoid-attention paper's hybrid-norm: a LayerNorm on the attention output, which
///   bounds the output norm that sigmoid attention can otherwise blow up early in training)
/// LayerScale, when enabled, multiplies each branch just before the residual add.
enum class BlockNorm { PreNorm, HybridNorm };

struct TransformerBlockOptions {
  TransformerBlockOptions(AttentionOptions attention = {});
  /// embed_dim and num_heads here define the block's width.
  TORCH_ARG(AttentionOptions, attention);
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(BlockNorm, norm) = BlockNorm::PreNorm;
  /// LayerScale's initial value; 0 disables LayerScale.
  TORCH_ARG(double, layer_scale_init) = 0.0;
  TORCH_ARG(double, norm_eps) = 1e-6;
  /// σReparam for every linear of the block (the attention's too).
  TORCH_ARG(bool, sigma_reparam) = false;
};

class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
public:
  explicit TransformerBlockImpl(TransformerBlockOptions options);
  void reset() override;

  /// x [B, S, E]; key_lengths as in Attention.
  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &key_lengths = {});

  TransformerBlockOptions options;
  torch::nn::LayerNorm attention_norm{nullptr}, mlp_norm{nullptr};
  /// HybridNorm only.
  torch::nn::LayerNorm attention_output_norm{nullptr};
  Attention attention{nullptr};
  Mlp mlp{nullptr};
  /// layer_scale_init > 0 only.
  LayerScale attention_scale{nullptr}, mlp_scale{nullptr};

protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})
};
TORCH_MODULE(TransformerBlock);

struct TransformerEncoderOptions {
  TransformerEncoderOptions(TransformerBlockOptions block = {}, int64_t depth = 1);
  TORCH_ARG(TransformerBlockOptions, block);
  TORCH_ARG(int64_t, depth);
};

/// The encoder an architecture's options describe: ViT and the speech transformer carry the
/// same encoder fields (attention, embed_dim, num_heads, mlp_ratio, norm, layer_scale_init,
/// sigma_reparam, depth).
template <typename ArchitectureOptions>
TransformerEncoderOptions encoderOptionsOf(const ArchitectureOptions &options) {
  AttentionOptions attentionOptions = options.attention();
  attentionOptions.embed_dim(options.embed_dim()).num_heads(options.num_heads());
  return TransformerEncoderOptions(TransformerBlockOptions(attentionOptions)
                                       .mlp_ratio(options.mlp_ratio())
                                       .norm(options.norm())
                                       .layer_scale_init(options.layer_scale_init())
                                       .sigma_reparam(options.sigma_reparam()),
                                   options.depth());
}

/// `depth` blocks followed by a LayerNorm.
class TransformerEncoderImpl : public torch::nn::Cloneable<TransformerEncoderImpl> {
public:
  explicit TransformerEncoderImpl(TransformerEncoderOptions options);
  void reset() override;

  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &key_lengths = {});
  /// [depth, num_heads]: each block's last_entropy() (needs attention().record_entropy()).
  torch::Tensor attention_entropy() const;

  TransformerEncoderOptions options;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};

protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})
};
TORCH_MODULE(TransformerEncoder);

} // namespace attn::models

#endif // MODELS_TRANSFORMERBLOCK_H
