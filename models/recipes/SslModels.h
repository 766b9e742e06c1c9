// The pieces SSL recipes put on top of a ViT: an MLP head (projector / predictor) with batch
// statistics, and an encoder that maps images to one embedding per image.
#ifndef MODELS_RECIPES_SSLMODELS_H
#define MODELS_RECIPES_SSLMODELS_H

#include "models/Projection.h"
#include "models/VisionTransformer.h"
#include "models/train/Config.h"
#include "models/train/Distributed.h"

#include <torch/nn/modules/normalization.h>

#include <memory>
#include <string>
#include <vector>

namespace attn::recipes {

/// BatchNorm over dim 0 of [N, C] whose training-mode mean and (biased) variance are those of
/// the global batch: with a process group set, the per-feature sums are all-reduced
/// (differentiably, so the gradient is the one-process gradient too); without one, or with world
/// size 1, it is torch's BatchNorm1d. Eval mode uses the running statistics (momentum 0.1,
/// unbiased running variance, as torch).
class SyncBatchNorm1dImpl : public torch::nn::Cloneable<SyncBatchNorm1dImpl> {
public:
  explicit SyncBatchNorm1dImpl(int64_t features, double eps = 1e-5, double momentum = 0.1);
  void reset() override;
  void pretty_print(std::ostream &stream) const override;
  torch::Tensor forward(const torch::Tensor &input);

  int64_t features_;
  double eps_, momentum_;
  torch::Tensor weight, bias, running_mean, running_var;
  /// Null: statistics of this process's batch only.
  std::shared_ptr<train::Distributed> group;
};
TORCH_MODULE(SyncBatchNorm1d);

/// Sets the process group of every SyncBatchNorm1d inside `module`.
void setBatchNormGroup(torch::nn::Module &module, const std::shared_ptr<train::Distributed> &group);
/// Puts every SyncBatchNorm1d inside `module` in training mode (batch statistics) and leaves
/// the other submodules' mode alone: BYOL's target network normalises with its batch's statistics.
void useBatchStatistics(torch::nn::Module &module);

/// The heads' normalisation: `batch` is the papers' (BYOL, SimCLR: Linear → BN → ReLU → Linear,
/// statistics over the global batch); `layer` is LayerNorm + GELU, which needs no batch (BYOL
/// collapses with it).
enum class HeadNorm { Batch, Layer };
/// --head-norm=batch|layer.
HeadNorm parseHeadNorm(train::Config &config);

/// fc2(ReLU(BN(fc1(x)))) or fc2(GELU(LayerNorm(fc1(x)))).
class MlpHeadImpl : public torch::nn::Cloneable<MlpHeadImpl> {
public:
  MlpHeadImpl(int64_t in, int64_t hidden, int64_t out, bool sigmaReparam,
              HeadNorm norm = HeadNorm::Batch);
  void reset() override;
  torch::Tensor forward(const torch::Tensor &x);

  int64_t in_, hidden_, out_;
  bool sigmaReparam_;
  HeadNorm normKind_;
  models::Projection fc1{nullptr}, fc2{nullptr};
  /// Exactly one is set, registered as "norm".
  SyncBatchNorm1d batchNorm{nullptr};
  torch::nn::LayerNorm layerNorm{nullptr};
};
TORCH_MODULE(MlpHead);

/// ViT backbone (mean of the final token features) followed by a projector.
class SslEncoderImpl : public torch::nn::Cloneable<SslEncoderImpl> {
public:
  SslEncoderImpl(models::VisionTransformerOptions backbone, int64_t projectionHidden,
                 int64_t projectionDim, HeadNorm norm = HeadNorm::Batch);
  void reset() override;
  /// images → projections [B, projectionDim].
  torch::Tensor forward(const torch::Tensor &images);
  /// images = `views` equal blocks (one per view) → projections, the backbone run once on all of
  /// them and the projector once per view, so batch statistics are each view's (as BYOL).
  torch::Tensor forward(const torch::Tensor &images, int64_t views);

  models::VisionTransformerOptions backboneOptions_;
  int64_t projectionHidden_, projectionDim_;
  HeadNorm normKind_;
  models::VisionTransformer backbone{nullptr};
  MlpHead projector{nullptr};
};
TORCH_MODULE(SslEncoder);

/// Keeps out of training the parameters whose exact gradient is zero in SSL training, which Adam
/// would otherwise walk on rounding noise (its update normalises a 1e-10 gradient to ±lr):
/// - with BatchNorm heads, the backbone's final-norm bias: it shifts every pooled feature by the
///   same vector, which the projector's BatchNorm subtracts with the batch mean
///   (requires_grad off, so the optimizer never holds it);
/// - with softmax attention (no QK-norm, no RoPE), the key part of each fused qkv bias: q·b_k is
///   the same for every key of a query, which softmax ignores (a gradient hook zeroes that
///   slice, so Adam's moments stay 0 and the entries keep their initial value).
/// Call before building the optimizer. Returns what it froze, by name.
std::vector<std::string> freezeInvariantParameters(SslEncoderImpl &encoder);

/// `head` applied to each of `views` equal blocks of x's rows separately, concatenated.
torch::Tensor perView(MlpHead &head, const torch::Tensor &x, int64_t views);

} // namespace attn::recipes

#endif // MODELS_RECIPES_SSLMODELS_H
