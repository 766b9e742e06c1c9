#include "models/recipes/SslModels.h"

#include "models/recipes/Vision.h"

#include "models/AttentionVariant.h"

namespace attn::recipes {

SyncBatchNorm1dImpl::SyncBatchNorm1dImpl(int64_t features, double eps, double momentum)
    : features_(features), eps_(eps), momentum_(momentum) {
  reset();
}

void SyncBatchNorm1dImpl::reset() {
  weight = register_parameter("weight", torch::ones({features_}));
  bias = register_parameter("bias", torch::zeros({features_}));
  running_mean = register_buffer("running_mean", torch::zeros({features_}));
  running_var = register_buffer("running_var", torch::ones({features_}));
}

void SyncBatchNorm1dImpl::pretty_print(std::ostream &stream) const {
  stream << "attn::recipes::SyncBatchNorm1d(" << features_ << ", eps=" << eps_
         << ", momentum=" << momentum_ << ")";
}

torch::Tensor SyncBatchNorm1dImpl::forward(const torch::Tensor &input) {
  TORCH_CHECK(input.dim() == 2 && input.size(1) == features_, "SyncBatchNorm1d: expected [N, ",
              features_, "], got ", input.sizes());
  if (!is_training())
    return (input - running_mean) * torch::rsqrt(running_var + eps_) * weight + bias;
  // Statistics and normalisation in float32 at least (bfloat16/float16 runs).
  auto x = input.scalar_type() == torch::kFloat64 ? input : input.to(torch::kFloat32);
  bool synced = group && group->worldSize() > 1;
  auto globalSum = [&](const torch::Tensor &t) {
    return synced ? group->allReduceSumWithGradient(t) : t;
  };
  // One collective per statistic: the sums and the sample count travel together.
  auto count = torch::full({1}, double(x.size(0)), x.options().requires_grad(false));
  auto sums = globalSum(torch::cat({x.sum(0), count}));
  auto n = sums[features_].detach();
  double total = n.item<double>();
  TORCH_CHECK(total > 1, "SyncBatchNorm1d: batch statistics need more than one sample");
  auto mean = sums.slice(0, 0, features_) / n;
  auto centred = x - mean;
  // Two passes (mean first, then squared deviations): no cancellation in E[x²] − E[x]².
  auto variance = globalSum((centred * centred).sum(0)) / n;
  {
    torch::NoGradGuard noGrad;
    running_mean.mul_(1 - momentum_).add_(mean.detach().to(running_mean.dtype()), momentum_);
    running_var.mul_(1 - momentum_).add_((variance.detach() * (total / (total - 1))).to(running_var.dtype()),
                                         momentum_);
  }
  return (centred * torch::rsqrt(variance + eps_) * weight + bias).to(input.dtype());
}

namespace {
template <typename F> void forEachBatchNorm(torch::nn::Module &module, F &&f) {
  for (const auto &child : module.modules(/*include_self=*/true))
    if (auto *bn = dynamic_cast<SyncBatchNorm1dImpl *>(child.get()))
      f(*bn);
}
} // namespace

void setBatchNormGroup(torch::nn::Module &module, const std::shared_ptr<train::Distributed> &group) {
  forEachBatchNorm(module, [&](SyncBatchNorm1dImpl &bn) { bn.group = group; });
}

void useBatchStatistics(torch::nn::Module &module) {
  forEachBatchNorm(module, [](SyncBatchNorm1dImpl &bn) { bn.train(true); });
}

HeadNorm parseHeadNorm(train::Config &config) {
  std::string norm = config.getChoice(
      "head-norm", "batch", {"batch", "layer"},
      "projector/predictor normalisation: batch (the papers' BatchNorm over the global batch, "
      "then ReLU) or layer (LayerNorm, then GELU)");
  return norm == "batch" ? HeadNorm::Batch : HeadNorm::Layer;
}

MlpHeadImpl::MlpHeadImpl(int64_t in, int64_t hidden, int64_t out, bool sigmaReparam, HeadNorm norm)
    : in_(in), hidden_(hidden), out_(out), sigmaReparam_(sigmaReparam), normKind_(norm) {
  reset();
}

void MlpHeadImpl::reset() {
  fc1 = register_module("fc1", models::Projection(models::ProjectionOptions(in_, hidden_).sigma_reparam(sigmaReparam_)));
  if (normKind_ == HeadNorm::Batch)
    batchNorm = register_module("norm", SyncBatchNorm1d(hidden_));
  else
    layerNorm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden_})));
  fc2 = register_module("fc2", models::Projection(models::ProjectionOptions(hidden_, out_).sigma_reparam(sigmaReparam_)));
}

torch::Tensor MlpHeadImpl::forward(const torch::Tensor &x) {
  auto hidden = fc1->forward(x);
  if (normKind_ == HeadNorm::Batch)
    return fc2->forward(torch::relu(batchNorm->forward(hidden)));
  return fc2->forward(torch::gelu(layerNorm->forward(hidden)));
}

SslEncoderImpl::SslEncoderImpl(models::VisionTransformerOptions backbone, int64_t projectionHidden,
                               int64_t projectionDim, HeadNorm norm)
    : backboneOptions_(std::move(backbone)), projectionHidden_(projectionHidden),
      projectionDim_(projectionDim), normKind_(norm) {
  reset();
}

void SslEncoderImpl::reset() {
  backbone = register_module("backbone", models::VisionTransformer(backboneOptions_));
  projector = register_module("projector", MlpHead(backboneOptions_.embed_dim(), projectionHidden_,
                                                   projectionDim_, backboneOptions_.sigma_reparam(),
                                                   normKind_));
}

torch::Tensor SslEncoderImpl::forward(const torch::Tensor &images) {
  return projector->forward(pooledFeatures(backbone, images));
}

torch::Tensor SslEncoderImpl::forward(const torch::Tensor &images, int64_t views) {
  return perView(projector, pooledFeatures(backbone, images), views);
}

std::vector<std::string> freezeInvariantParameters(SslEncoderImpl &encoder) {
  std::vector<std::string> frozen;
  auto &vit = *encoder.backbone;
  if (encoder.normKind_ == HeadNorm::Batch && vit.encoder->norm->options.elementwise_affine()) {
    vit.encoder->norm->bias.set_requires_grad(false);
    frozen.push_back("backbone.encoder.norm.bias");
  }
  const auto &attention = vit.options.attention();
  bool softmax = models::parse_normalizer(attention.normalizer()).kind == models::NormalizerSpec::Kind::Softmax;
  if (!softmax || attention.qk_norm() || attention.rope())
    return frozen;
  int64_t index = 0;
  for (const auto &block : *vit.encoder->blocks) {
    auto &layer = *block->as<models::TransformerBlockImpl>()->attention;
    if (!layer.qkv || !layer.options.qkv_bias())
      continue;
    const int64_t heads = layer.options.num_heads();
    const int64_t kvHeads = layer.options.num_kv_heads() > 0 ? layer.options.num_kv_heads() : heads;
    const int64_t headDim = layer.options.head_dim() > 0 ? layer.options.head_dim()
                                                         : layer.options.embed_dim() / heads;
    for (auto &item : layer.qkv->named_parameters()) {
      if (item.key() != "linear.bias" && item.key() != "reparam.bias")
        continue;
      const int64_t begin = heads * headDim, end = begin + kvHeads * headDim;
      item.value().register_hook([begin, end](torch::Tensor grad) {
        grad = grad.clone();
        grad.slice(0, begin, end).zero_();
        return grad;
      });
      frozen.push_back("backbone.encoder.blocks." + std::to_string(index) + ".attention.qkv." +
                       item.key() + "[" + std::to_string(begin) + ":" + std::to_string(end) + "]");
    }
    ++index;
  }
  return frozen;
}

torch::Tensor perView(MlpHead &head, const torch::Tensor &x, int64_t views) {
  TORCH_CHECK(views > 0 && x.size(0) % views == 0, "perView: ", x.size(0),
              " rows do not split into ", views, " views");
  std::vector<torch::Tensor> outputs;
  for (const auto &chunk : x.chunk(views, 0))
    outputs.push_back(head->forward(chunk));
  return torch::cat(outputs);
}

} // namespace attn::recipes
