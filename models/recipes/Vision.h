// What the image recipes share: the data set options, the ViT options, evaluation
// (classification accuracy, k-NN accuracy of frozen features) and batching on the device.
#ifndef MODELS_RECIPES_VISION_H
#define MODELS_RECIPES_VISION_H

#include "models/VisionTransformer.h"
#include "models/data/Augment.h"
#include "models/data/ImageData.h"
#include "models/recipes/Diagnostics.h"
#include "models/recipes/Ewc.h"
#include "models/train/Run.h"

#include <functional>
#include <string>
#include <vector>

namespace attn::recipes {

struct ImageData {
  std::string name;
  data::ImageSplits splits; ///< with --classes, only those classes' images (labels unchanged)
  /// The whole training split, --classes or not: what self-supervised pre-training saw (EWC's
  /// Fisher is taken on it).
  data::ImageSet allTrain;
  data::Normalisation normalisation; ///< of the whole training split
  int64_t channels = 1, imageSize = 28, numClasses = 10;
};

/// The schedule the self-supervised recipes (simclr/polyview, byol, mp3) share: 300 steps of
/// 128, lr 1e-3 with 30 warm-up steps, an evaluation every 100 steps.
train::RecipeDefaults selfSupervisedDefaults();

struct ImageDataOptions {
  std::string dataset, folder;
  int64_t size = 32, channels = 3;
  std::vector<int64_t> classes; ///< empty: all
};
/// --dataset=fashion-mnist|digits|folder (+ --image-folder, --image-size, --channels), and
/// --classes=LIST ("0-4", "5,7,9"): keep only these classes in both splits, labels and the
/// number of classes as they are, normalisation from the whole training split (a task on part of
/// the data: e.g. fine-tune on 0-4, then measure what the features kept on 5-9).
ImageDataOptions parseImageDataOptions(train::Config &config,
                                       const std::string &defaultDataset = "fashion-mnist");
ImageData loadImageData(const ImageDataOptions &options, const train::CommonOptions &common);
/// "0-4,7" → {0, 1, 2, 3, 4, 7} (sorted, no repeats); "" → {}; anything else a UsageError.
std::vector<int64_t> parseClassList(const std::string &text);
/// The images of `set` whose label is in `classes` (all when empty), in their order.
data::ImageSet keepClasses(const data::ImageSet &set, const std::vector<int64_t> &classes);

/// ViT options from --embed-dim, --depth, --heads, --patch-size, --mlp-ratio, --pool, --qk-norm,
/// --norm, --layer-scale; attention variant and σReparam from the common options. `prefix`
/// names a second model's options (e.g. "teacher-").
models::VisionTransformerOptions parseVitOptions(train::Config &config,
                                                 const train::CommonOptions &common,
                                                 const std::string &prefix = "");
/// Sets image size, channels and classes from the data; checks the patch size divides the image.
models::VisionTransformerOptions fitVitToData(models::VisionTransformerOptions options,
                                              const ImageData &data);

/// SSL view options: --crop-min, --flip, --jitter, --jitter-prob, --blur-sigma, --blur-prob,
/// --randaugment-ops, --randaugment-magnitude (the size is set from the data later).
data::ViewOptions parseViewOptions(train::Config &config);

/// Supervised augmentation of images in [0, 1]: `none`, `crop-flip` (random resized crop of
/// 60–100 % area + flip) or `randaugment` (crop-flip, then two RandAugment ops at magnitude 9).
/// The per-sample parameters come from `random` (training steps: SampleRandom::forStep, so that
/// data-parallel ranks draw their slices of one draw for the global batch).
torch::Tensor augmentSupervised(const torch::Tensor &images, const std::string &mode,
                                data::SampleRandom random = {});

/// Batch `indices` of `set`, normalised, on the device in the run's dtype.
torch::Tensor imagesOn(const data::ImageSet &set, const torch::Tensor &indices,
                       const ImageData &data, const train::CommonOptions &common,
                       const std::string &augment = "none", data::SampleRandom random = {});

/// Accuracy (and mean cross-entropy) of `model` on up to `limit` test images (0 = all), eval mode.
train::Values evaluateClassifier(models::VisionTransformer &model, const ImageData &data,
                                 const train::CommonOptions &common, int64_t limit,
                                 const std::string &prefix = "test_");

/// Mean-pooled final features of `model` (ViT features(); class token excluded).
torch::Tensor pooledFeatures(models::VisionTransformer &model, const torch::Tensor &images);

/// k-NN (cosine, k = 20, similarity-weighted votes) accuracy of frozen features: the first
/// `bankSize` training images are the memory bank, the first `queries` test images are classified.
double knnAccuracy(models::VisionTransformer &model, const ImageData &data,
                   const train::CommonOptions &common, int64_t bankSize, int64_t queries);

/// Mean-pooled features (float32, on the CPU) of the first `n` images of `set`, eval mode.
torch::Tensor frozenFeatures(models::VisionTransformer &model, const data::ImageSet &set,
                             int64_t n, const ImageData &data, const train::CommonOptions &common);

/// Linear probe: multinomial logistic regression (zero-initialised, full-batch AdamW, lr 0.05,
/// weight decay 1e-4, `steps` steps) on features standardised with the training features'
/// mean and std; returns the accuracy on the test features. Deterministic; float32; no autocast.
double linearProbeAccuracy(const torch::Tensor &trainFeatures, const torch::Tensor &trainLabels,
                           const torch::Tensor &testFeatures, const torch::Tensor &testLabels,
                           int64_t numClasses, int64_t steps = 300);
/// The probe's test accuracy and the calibration of its test probabilities (Calibration.h).
struct LinearProbeResult {
  double accuracy = 0, expectedCalibrationError = 0, brierScore = 0;
};
LinearProbeResult linearProbe(const torch::Tensor &trainFeatures, const torch::Tensor &trainLabels,
                              const torch::Tensor &testFeatures, const torch::Tensor &testLabels,
                              int64_t numClasses, int64_t steps = 300);
/// The probe on `model`'s frozen features: the first `trainImages` training images, the first
/// `testImages` test images.
LinearProbeResult linearProbe(models::VisionTransformer &model, const ImageData &data,
                              const train::CommonOptions &common, int64_t trainImages,
                              int64_t testImages, int64_t steps);

/// The SSL recipes' evaluation of a backbone: k-NN and linear probe on frozen features.
struct SslEvaluation {
  int64_t knnBank = 5000, knnQueries = 1000, probeTrain = 5000, probeTest = 1000, probeSteps = 300;
  /// --knn-bank, --knn-queries, --probe-train, --probe-test, --probe-steps (0: no probe).
  static SslEvaluation parse(train::Config &config);
  /// knn_accuracy, linear_probe_accuracy and the probe's calibration (linear_probe_ece,
  /// linear_probe_brier).
  train::Values operator()(models::VisionTransformer &backbone, const ImageData &data,
                           const train::CommonOptions &common) const;
  /// The metric names, and the same with `_step0` (the untrained encoder's figures).
  std::vector<std::string> columns() const;
};

/// A self-supervised run's evaluation: `evaluation` and the ViT diagnostics of `backbone`. The
/// untrained encoder's figures are measured now (under the run's autocast) and added to the
/// final evaluation as `_step0` columns, the baseline the final figures are read against (the
/// initialisation is a function of --seed and --init, so a resumed run measures the same model).
std::function<train::Values(bool)> sslEvaluator(const SslEvaluation &evaluation,
                                                const DiagnosticColumns &diagnostics,
                                                models::VisionTransformer backbone,
                                                const ImageData &data,
                                                const train::CommonOptions &common);

/// --init=PATH (a ViT model.pt: vit-supervised, mp3 (fine-tuned, or OUT/pretrain/model.pt),
/// distill or an SSL recipe's backbone) for a recipe's ViT; empty: none.
std::string parseInitOption(train::Config &config);
/// Copies every parameter and buffer of the checkpoint at `path` into `model`: names and shapes
/// must all match (else a UsageError naming the tensor), except the classification head, which
/// is copied only when `withHead`, the checkpoint's head fits and the checkpoint is not an SSL
/// backbone (simclr, polyview, byol: their heads were never trained) nor MP3's pretrained
/// backbone (mp3-pretrain). Tensors of `model` the checkpoint lacks (MP3's backbone has no
/// position embedding) keep their initialisation. Returns the number of tensors copied; logs it
/// on stderr; `copiedNames`, when given, receives the copied tensors' names.
int64_t initFromCheckpoint(models::VisionTransformer &model, const std::string &path, bool withHead,
                           bool log = true, std::vector<std::string> *copiedNames = nullptr);

/// EWC toward `model`'s current weights (just loaded from a checkpoint) for the tensors named in
/// `fromCheckpoint` (the others, fresh, are free): the diagonal Fisher of the pooled features
/// (Ewc.h) on the first `samples` training images (of the whole split, --classes or not: the
/// pre-training's data), in eval mode, seed --seed.
EwcPenalty ewcFromCheckpoint(models::VisionTransformer &model, const std::vector<std::string> &fromCheckpoint,
                             const ImageData &data, const train::CommonOptions &common, int64_t samples,
                             double lambda);

/// attentionDiagnostics for a ViT on the first 256 test images.
train::Values vitDiagnostics(const DiagnosticColumns &columns, models::VisionTransformer &model,
                             const ImageData &data, const train::CommonOptions &common);

/// Writes a self-supervised run's pretrained backbone to OUT/model.pt (readable by
/// models::load_vision_transformer), with the recipe and the final k-NN accuracy when the run
/// reported one.
void saveSslBackbone(const models::VisionTransformer &backbone, const std::string &outDir,
                     const std::string &recipe, const train::Values &finalValues);

} // namespace attn::recipes

#endif // MODELS_RECIPES_VISION_H
