#include "models/PatchEmbedding.h"

namespace attn::models {

PatchEmbeddingOptions::PatchEmbeddingOptions(int64_t in_channels, int64_t embed_dim,
                                             int64_t patch_size)
    : in_channels_(in_channels), embed_dim_(embed_dim), patch_size_(patch_size) {}

PatchEmbeddingImpl::PatchEmbeddingImpl(PatchEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void PatchEmbeddingImpl::reset() {
  TORCH_CHECK(options.in_channels() > 0 && options.embed_dim() > 0 && options.patch_size() > 0,
              "PatchEmbedding: in_channels, embed_dim and patch_size must be positive");
  const int64_t patch = options.patch_size();
  if (options.sigma_reparam()) {
    conv = nullptr;
    reparam = register_module(
        "reparam", SigmaReparamConv2d(SigmaReparamConv2dOptions(options.in_channels(),
                                                                options.embed_dim(), patch)
                                          .stride(patch)));
  } else {
    reparam = nullptr;
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(),
                                                           options.embed_dim(), patch)
                                      .stride(patch)));
  }
}

torch::Tensor PatchEmbeddingImpl::forward(const torch::Tensor &images) {
  const int64_t patch = options.patch_size();
  TORCH_CHECK(images.dim() == 4 && images.size(1) == options.in_channels() &&
                  images.size(2) % patch == 0 && images.size(3) % patch == 0,
              "PatchEmbedding: images must be [B, ", options.in_channels(),
              ", H, W] with H and W multiples of ", patch, ", got shape ", images.sizes());
  const torch::Tensor grid = reparam ? reparam->forward(images) : conv->forward(images);
  return grid.flatten(2).transpose(1, 2);
}

void PatchEmbeddingImpl::convert_to_sigma_reparam() {
  if (reparam)
    return;
  const int64_t patch = options.patch_size();
  SigmaReparamConv2d converted(
      SigmaReparamConv2dOptions(options.in_channels(), options.embed_dim(), patch).stride(patch));
  converted->to(conv->weight.device(), conv->weight.scalar_type());
  converted->reset_from(conv->weight, conv->bias);
  converted->train(is_training());
  unregister_module("conv");
  conv = nullptr;
  reparam = register_module("reparam", converted);
  options.sigma_reparam(true);
}

} // namespace attn::models
