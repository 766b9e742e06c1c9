#include "models/TransformerBlock.h"

#include <torch/nn/functional/activation.h>

namespace attn::models {

// ----- LayerScale ------------------------------------------------------------------------------

LayerScaleOptions::LayerScaleOptions(int64_t dim, double init_value)
    : dim_(dim), init_value_(init_value) {}

LayerScaleImpl::LayerScaleImpl(LayerScaleOptions options_) : options(std::move(options_)) {
  reset();
}

void LayerScaleImpl::reset() {
  TORCH_CHECK(options.dim() > 0, "LayerScale: dim must be positive, got ", options.dim());
  scale = register_parameter("scale", torch::full({options.dim()}, options.init_value()));
}

torch::Tensor LayerScaleImpl::forward(const torch::Tensor &x) { return x * scale; }

// ----- Mlp -------------------------------------------------------------------------------------

MlpOptions::MlpOptions(int64_t dim, int64_t hidden_dim) : dim_(dim), hidden_dim_(hidden_dim) {}

MlpImpl::MlpImpl(MlpOptions options_) : options(std::move(options_)) { reset(); }

void MlpImpl::reset() {
  fc1 = register_module("fc1", Projection(ProjectionOptions(options.dim(), options.hidden_dim())
                                              .sigma_reparam(options.sigma_reparam())));
  fc2 = register_module("fc2", Projection(ProjectionOptions(options.hidden_dim(), options.dim())
                                              .sigma_reparam(options.sigma_reparam())));
}

torch::Tensor MlpImpl::forward(const torch::Tensor &x) {
  return fc2->forward(torch::nn::functional::gelu(fc1->forward(x)));
}

// ----- TransformerBlock ------------------------------------------------------------------------

TransformerBlockOptions::TransformerBlockOptions(AttentionOptions attention)
    : attention_(std::move(attention)) {}

TransformerBlockImpl::TransformerBlockImpl(TransformerBlockOptions options_)
    : options(std::move(options_)) {
  reset();
}

void TransformerBlockImpl::reset() {
  const int64_t dim = options.attention().embed_dim();
  TORCH_CHECK(dim > 0, "TransformerBlock: attention().embed_dim() must be positive, got ", dim);
  TORCH_CHECK(options.mlp_ratio() > 0, "TransformerBlock: mlp_ratio must be positive");
  auto layerNorm = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(options.norm_eps()));
  };
  AttentionOptions attentionOptions = options.attention();
  if (options.sigma_reparam())
    attentionOptions.sigma_reparam(true);

  attention_norm = register_module("attention_norm", layerNorm());
  attention = register_module("attention", Attention(attentionOptions));
  mlp_norm = register_module("mlp_norm", layerNorm());
  mlp = register_module(
      "mlp", Mlp(MlpOptions(dim, static_cast<int64_t>(dim * options.mlp_ratio()))
                     .sigma_reparam(attentionOptions.sigma_reparam())));
  attention_output_norm = nullptr;
  if (options.norm() == BlockNorm::HybridNorm)
    attention_output_norm = register_module("attention_output_norm", layerNorm());
  attention_scale = mlp_scale = nullptr;
  if (options.layer_scale_init() > 0) {
    attention_scale = register_module(
        "attention_scale", LayerScale(LayerScaleOptions(dim, options.layer_scale_init())));
    mlp_scale =
        register_module("mlp_scale", LayerScale(LayerScaleOptions(dim, options.layer_scale_init())));
  }
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor &x,
                                            const torch::Tensor &key_lengths) {
  torch::Tensor branch = attention->forward(attention_norm->forward(x), key_lengths);
  if (attention_output_norm)
    branch = attention_output_norm->forward(branch);
  if (attention_scale)
    branch = attention_scale->forward(branch);
  const torch::Tensor hidden = x + branch;

  branch = mlp->forward(mlp_norm->forward(hidden));
  if (mlp_scale)
    branch = mlp_scale->forward(branch);
  return hidden + branch;
}

// ----- TransformerEncoder ----------------------------------------------------------------------

TransformerEncoderOptions::TransformerEncoderOptions(TransformerBlockOptions block, int64_t depth)
    : block_(std::move(block)), depth_(depth) {}

TransformerEncoderImpl::TransformerEncoderImpl(TransformerEncoderOptions options_)
    : options(std::move(options_)) {
  reset();
}

void TransformerEncoderImpl::reset() {
  TORCH_CHECK(options.depth() > 0, "TransformerEncoder: depth must be positive, got ",
              options.depth());
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t index = 0; index < options.depth(); ++index)
    blocks->push_back(TransformerBlock(options.block()));
  norm = register_module(
      "norm", torch::nn::LayerNorm(
                  torch::nn::LayerNormOptions({options.block().attention().embed_dim()})
                      .eps(options.block().norm_eps())));
}

torch::Tensor TransformerEncoderImpl::forward(const torch::Tensor &x,
                                              const torch::Tensor &key_lengths) {
  torch::Tensor hidden = x;
  for (const auto &block : *blocks)
    hidden = block->as<TransformerBlockImpl>()->forward(hidden, key_lengths);
  return norm->forward(hidden);
}

torch::Tensor TransformerEncoderImpl::attention_entropy() const {
  std::vector<torch::Tensor> rows;
  for (const auto &block : *blocks) {
    const torch::Tensor &entropy = block->as<TransformerBlockImpl>()->attention->last_entropy();
    TORCH_CHECK(entropy.defined(), "attention_entropy: no entropy recorded; set "
                                   "attention().record_entropy(true) and run a forward first");
    rows.push_back(entropy);
  }
  return torch::stack(rows);
}

} // namespace attn::models
