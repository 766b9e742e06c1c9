#include "models/VisionTransformer.h"

namespace attn::models {

VisionTransformerOptions::VisionTransformerOptions(int64_t num_classes)
    : num_classes_(num_classes) {}

namespace {
VisionTransformerOptions preset(int64_t numClasses, int64_t width, int64_t depth, int64_t heads) {
  return VisionTransformerOptions(numClasses)
      .image_size(224)
      .patch_size(16)
      .in_channels(3)
      .embed_dim(width)
      .depth(depth)
      .num_heads(heads);
}
} // namespace

VisionTransformerOptions VisionTransformerOptions::tiny(int64_t num_classes) {
  return preset(num_classes, 192, 12, 3);
}
VisionTransformerOptions VisionTransformerOptions::small(int64_t num_classes) {
  return preset(num_classes, 384, 12, 6);
}
VisionTransformerOptions VisionTransformerOptions::base(int64_t num_classes) {
  return preset(num_classes, 768, 12, 12);
}

TransformerEncoderOptions VisionTransformerOptions::encoder() const {
  return encoderOptionsOf(*this);
}

VisionTransformerImpl::VisionTransformerImpl(VisionTransformerOptions options_)
    : options(std::move(options_)) {
  reset();
}

int64_t VisionTransformerImpl::num_patches() const {
  const int64_t side = options.image_size() / options.patch_size();
  return side * side;
}

void VisionTransformerImpl::reset() {
  TORCH_CHECK(options.patch_size() > 0 && options.image_size() > 0 &&
                  options.image_size() % options.patch_size() == 0,
              "VisionTransformer: image_size ", options.image_size(),
              " must be a positive multiple of patch_size ", options.patch_size());
  TORCH_CHECK(options.num_classes() > 0, "VisionTransformer: num_classes must be positive, got ",
              options.num_classes());
  const int64_t width = options.embed_dim();
  patch_embedding = register_module(
      "patch_embedding",
      PatchEmbedding(PatchEmbeddingOptions(options.in_channels(), width, options.patch_size())
                         .sigma_reparam(options.sigma_reparam())));
  const bool classToken = options.pooling() == Pooling::ClassToken;
  class_token = position_embedding = torch::Tensor();
  if (classToken)
    class_token = register_parameter("class_token", trunc_normal_(torch::empty({1, 1, width}), 0.02));
  if (options.position_embedding())
    position_embedding = register_parameter(
        "position_embedding",
        trunc_normal_(torch::empty({1, num_patches() + (classToken ? 1 : 0), width}), 0.02));
  encoder = register_module("encoder", TransformerEncoder(options.encoder()));
  head = register_module("head", Projection(ProjectionOptions(width, options.num_classes())
                                                .sigma_reparam(options.sigma_reparam())));
}

torch::Tensor VisionTransformerImpl::features(const torch::Tensor &images) {
  TORCH_CHECK(images.dim() == 4, "VisionTransformer: images must be [B, C, H, W], got shape ",
              images.sizes());
  TORCH_CHECK(!options.position_embedding() || (images.size(2) == options.image_size() &&
                                                images.size(3) == options.image_size()),
              "VisionTransformer: position embeddings are learned for ", options.image_size(),
              "x", options.image_size(), " images, got ", images.size(2), "x", images.size(3));
  torch::Tensor tokens = patch_embedding->forward(images);
  if (class_token.defined())
    tokens = torch::cat({class_token.expand({tokens.size(0), 1, tokens.size(2)}), tokens}, 1);
  if (position_embedding.defined())
    tokens = tokens + position_embedding;
  return encoder->forward(tokens);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor &images) {
  const torch::Tensor tokens = features(images);
  const torch::Tensor pooled =
      options.pooling() == Pooling::ClassToken ? tokens.select(1, 0) : tokens.mean(1);
  return head->forward(pooled);
}

} // namespace attn::models
