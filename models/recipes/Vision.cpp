#include "models/recipes/Vision.h"

#include "models/recipes/Calibration.h"

#include "models/recipes/Recipes.h"

#include "models/Autocast.h"
#include "models/Checkpoint.h"

#include "models/data/Augment.h"

#include <algorithm>
#include <filesystem>

namespace attn::recipes {
namespace F = torch::nn::functional;
using train::UsageError;

train::RecipeDefaults selfSupervisedDefaults() {
  train::RecipeDefaults defaults;
  defaults.steps = 300;
  defaults.batchSize = 128;
  defaults.learningRate = 1e-3;
  defaults.warmupSteps = 30;
  defaults.evalEvery = 100;
  return defaults;
}

ImageDataOptions parseImageDataOptions(train::Config &config, const std::string &defaultDataset) {
  ImageDataOptions o;
  o.dataset = config.getChoice("dataset", defaultDataset, {"fashion-mnist", "digits", "folder"},
                               "image data set");
  o.folder = config.getString("image-folder", "", "root with train/<class>/ and test/<class>/ images (--dataset=folder)");
  o.size = config.getInt("image-size", 32, "folder images are resized to this (--dataset=folder)");
  o.channels = config.getInt("channels", 3, "folder images: 1 (gray) or 3 (RGB)");
  const std::string classes = config.getString(
      "classes", "", "keep only these classes, e.g. 0-4 or 5,7,9 (labels unchanged; empty: all)");
  o.classes = parseClassList(classes);
  return o;
}

std::vector<int64_t> parseClassList(const std::string &text) {
  std::vector<int64_t> classes;
  auto number = [&](const std::string &item) -> int64_t {
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
      throw UsageError("--classes: '" + text + "' is not a list of class numbers and ranges (e.g. 0-4 or 5,7,9)");
    return std::stoll(item);
  };
  size_t start = 0;
  while (!text.empty() && start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t dash = item.find('-');
    int64_t first = number(item.substr(0, dash)), last = dash == std::string::npos ? first : number(item.substr(dash + 1));
    if (last < first)
      throw UsageError("--classes: the range '" + item + "' is empty");
    for (int64_t c = first; c <= last; ++c)
      if (std::find(classes.begin(), classes.end(), c) == classes.end())
        classes.push_back(c);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  std::sort(classes.begin(), classes.end());
  return classes;
}

data::ImageSet keepClasses(const data::ImageSet &set, const std::vector<int64_t> &classes) {
  if (classes.empty())
    return set;
  auto wanted = torch::zeros({set.labels.size(0)}, torch::kBool);
  for (int64_t c : classes)
    wanted |= set.labels.eq(c);
  auto rows = wanted.nonzero().squeeze(1);
  data::ImageSet kept = set;
  kept.images = set.images.index_select(0, rows);
  kept.labels = set.labels.index_select(0, rows);
  return kept;
}

ImageData loadImageData(const ImageDataOptions &options, const train::CommonOptions &common) {
  ImageData data;
  data.name = options.dataset;
  const std::string &folder = options.folder;
  int64_t size = options.size, channels = options.channels;
  if (data.name == "fashion-mnist") {
    data.splits = data::loadFashionMnist(common.dataDir);
  } else if (data.name == "digits") {
    data.splits = data::loadDigits(common.dataDir);
  } else {
    if (folder.empty())
      throw UsageError("--dataset=folder needs --image-folder=ROOT");
    data.splits = data::loadImageFolder(folder, size, channels);
  }
  data.channels = data.splits.train.images.size(1);
  data.imageSize = data.splits.train.images.size(2);
  data.numClasses = data.splits.train.numClasses;
  data.normalisation = data::normalisationOf(data.splits.train);
  data.allTrain = data.splits.train;
  for (int64_t c : options.classes)
    if (c >= data.numClasses)
      throw UsageError("--classes: " + data.name + " has classes 0-" + std::to_string(data.numClasses - 1) +
                       ", not " + std::to_string(c));
  data.splits.train = keepClasses(data.splits.train, options.classes);
  data.splits.test = keepClasses(data.splits.test, options.classes);
  return data;
}

models::VisionTransformerOptions parseVitOptions(train::Config &config,
                                                 const train::CommonOptions &common,
                                                 const std::string &prefix) {
  auto key = [&](const char *name) { return prefix + name; };
  models::VisionTransformerOptions o(10);
  o.patch_size(config.getInt(key("patch-size"), 4, "ViT patch size (divides the image size; 8x8 digits: 2)"));
  o.embed_dim(config.getInt(key("embed-dim"), 96, "ViT width"));
  o.depth(config.getInt(key("depth"), 4, "ViT blocks"));
  o.num_heads(config.getInt(key("heads"), 4, "ViT attention heads"));
  o.mlp_ratio(config.getDouble(key("mlp-ratio"), 2.0, "MLP hidden width / ViT width"));
  std::string pool = config.getChoice(key("pool"), "mean", {"cls", "mean"}, "class token or mean pooling");
  o.pooling(pool == "cls" ? models::Pooling::ClassToken : models::Pooling::Mean);
  std::string norm = config.getChoice(key("norm"), "pre", {"pre", "hybrid"}, "pre-norm or hybrid-norm blocks");
  o.norm(norm == "pre" ? models::BlockNorm::PreNorm : models::BlockNorm::HybridNorm);
  const AttentionDefaults stabilisers = attentionDefaults(common);
  o.layer_scale_init(config.getDouble(key("layer-scale"), stabilisers.layerScale,
                                      "LayerScale initial value (0: off; 0.1 with --attention=sigmoid)"));
  bool qkNorm = config.getBool(key("qk-norm"), stabilisers.qkNorm,
                               "LayerNorm on queries and keys (on with --attention=sigmoid)");
  if (o.patch_size() <= 0 || o.embed_dim() <= 0 || o.depth() <= 0 || o.num_heads() <= 0)
    throw UsageError("--" + key("patch-size") + ", --" + key("embed-dim") + ", --" + key("depth") +
                     " and --" + key("heads") + " must be positive");
  if (o.embed_dim() % o.num_heads() != 0)
    throw UsageError("--" + key("embed-dim") + " must be a multiple of --" + key("heads"));
  std::string backend = config.getChoice(key("attention-backend"), "compiled", {"compiled", "reference"},
                                         "attn::attention, or the same function in plain LibTorch ops (diagnostics)");
  models::AttentionOptions attention(o.embed_dim(), o.num_heads());
  attention.normalizer(common.attentionVariant).qk_norm(qkNorm);
  attention.backend(backend == "compiled" ? models::AttentionBackend::Compiled : models::AttentionBackend::Reference);
  o.attention(attention);
  o.sigma_reparam(common.sigmaReparam);
  return o;
}

models::VisionTransformerOptions fitVitToData(models::VisionTransformerOptions o,
                                              const ImageData &data) {
  o.image_size(data.imageSize).in_channels(data.channels).num_classes(data.numClasses);
  if (o.image_size() % o.patch_size() != 0)
    throw UsageError("--patch-size=" + std::to_string(o.patch_size()) +
                     " does not divide the image size " + std::to_string(o.image_size()) +
                     " of --dataset=" + data.name);
  return o;
}

data::ViewOptions parseViewOptions(train::Config &config) {
  data::ViewOptions v;
  v.cropScaleMin = config.getDouble("crop-min", 0.25, "smallest random-resized-crop area fraction");
  v.flip = config.getBool("flip", true, "random horizontal flips");
  v.jitterStrength = config.getDouble("jitter", 0.4, "colour jitter strength");
  v.jitterProbability = config.getDouble("jitter-prob", 0.8, "colour jitter probability");
  v.blurSigmaMax = config.getDouble("blur-sigma", 1.0, "largest Gaussian blur σ (pixels)");
  v.blurProbability = config.getDouble("blur-prob", 0.5, "blur probability");
  v.randAugmentOps = config.getInt("randaugment-ops", 0, "RandAugment ops per view (0: off)");
  v.randAugmentMagnitude = config.getDouble("randaugment-magnitude", 9, "RandAugment magnitude (0-10)");
  if (v.cropScaleMin <= 0 || v.cropScaleMin > 1)
    throw train::UsageError("--crop-min must be in (0, 1]");
  return v;
}

torch::Tensor augmentSupervised(const torch::Tensor &images, const std::string &mode,
                                data::SampleRandom random) {
  if (mode == "none")
    return images;
  auto out = data::randomResizedCrop(images, images.size(2), 0.6, 1.0, /*flip=*/true, random);
  if (mode == "randaugment")
    out = data::randAugment(out, 2, 9, random);
  return out;
}

torch::Tensor imagesOn(const data::ImageSet &set, const torch::Tensor &indices,
                       const ImageData &data, const train::CommonOptions &common,
                       const std::string &augment, data::SampleRandom random) {
  auto images = augmentSupervised(set.images.index_select(0, indices), augment, random);
  images = data.normalisation.apply(images);
  return images.to(common.device, common.dtype);
}

train::Values evaluateClassifier(models::VisionTransformer &model, const ImageData &data,
                                 const train::CommonOptions &common, int64_t limit,
                                 const std::string &prefix) {
  torch::NoGradGuard noGrad;
  bool wasTraining = model->is_training();
  model->eval();
  const auto &test = data.splits.test;
  int64_t n = limit > 0 ? std::min(limit, test.size()) : test.size();
  int64_t correct = 0;
  double lossSum = 0;
  for (int64_t start = 0; start < n; start += 500) {
    auto idx = torch::arange(start, std::min(n, start + 500), torch::kInt64);
    auto logits = model->forward(imagesOn(test, idx, data, common)).to(torch::kFloat32).cpu();
    auto labels = test.labels.index_select(0, idx);
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
    lossSum += F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
  }
  model->train(wasTraining);
  return {{prefix + "accuracy", double(correct) / double(n)}, {prefix + "loss", lossSum / double(n)}};
}

torch::Tensor pooledFeatures(models::VisionTransformer &model, const torch::Tensor &images) {
  auto tokens = model->features(images);
  if (model->options.pooling() == models::Pooling::ClassToken)
    tokens = tokens.slice(1, 1);
  return tokens.mean(1);
}

torch::Tensor frozenFeatures(models::VisionTransformer &model, const data::ImageSet &set,
                             int64_t n, const ImageData &data, const train::CommonOptions &common) {
  torch::NoGradGuard noGrad;
  bool wasTraining = model->is_training();
  model->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < n; start += 500) {
    auto idx = torch::arange(start, std::min(n, start + 500), torch::kInt64);
    parts.push_back(pooledFeatures(model, imagesOn(set, idx, data, common)).to(torch::kFloat32).cpu());
  }
  model->train(wasTraining);
  return torch::cat(parts);
}

LinearProbeResult linearProbe(const torch::Tensor &trainFeatures, const torch::Tensor &trainLabels,
                              const torch::Tensor &testFeatures, const torch::Tensor &testLabels,
                              int64_t numClasses, int64_t steps) {
  TORCH_CHECK(trainFeatures.dim() == 2 && testFeatures.dim() == 2 &&
                  trainFeatures.size(1) == testFeatures.size(1) &&
                  trainFeatures.size(0) == trainLabels.size(0) && testFeatures.size(0) == testLabels.size(0),
              "linearProbeAccuracy: features [N, D] with one label each expected");
  models::AutocastExcluded float32; // a float32 problem, whatever the run computes in
  torch::AutoGradMode gradients(true);
  auto train = trainFeatures.to(torch::kFloat32), test = testFeatures.to(torch::kFloat32);
  auto mean = train.mean(0, true), std = train.std(0, /*unbiased=*/true, true).clamp_min(1e-6);
  train = (train - mean) / std;
  test = (test - mean) / std;
  auto weight = torch::zeros({train.size(1), numClasses}, torch::requires_grad());
  auto bias = torch::zeros({numClasses}, torch::requires_grad());
  torch::optim::AdamW optimizer({weight, bias}, torch::optim::AdamWOptions(0.05).weight_decay(1e-4));
  for (int64_t step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    F::cross_entropy(train.matmul(weight) + bias, trainLabels).backward();
    optimizer.step();
  }
  torch::NoGradGuard noGrad;
  auto probabilities = torch::softmax(test.matmul(weight) + bias, 1);
  return {probabilities.argmax(1).eq(testLabels).to(torch::kFloat64).mean().item<double>(),
          expectedCalibrationError(probabilities, testLabels), brierScore(probabilities, testLabels)};
}

double linearProbeAccuracy(const torch::Tensor &trainFeatures, const torch::Tensor &trainLabels,
                           const torch::Tensor &testFeatures, const torch::Tensor &testLabels,
                           int64_t numClasses, int64_t steps) {
  return linearProbe(trainFeatures, trainLabels, testFeatures, testLabels, numClasses, steps).accuracy;
}

LinearProbeResult linearProbe(models::VisionTransformer &model, const ImageData &data,
                              const train::CommonOptions &common, int64_t trainImages,
                              int64_t testImages, int64_t steps) {
  int64_t nTrain = std::min(trainImages, data.splits.train.size());
  int64_t nTest = std::min(testImages, data.splits.test.size());
  return linearProbe(frozenFeatures(model, data.splits.train, nTrain, data, common),
                             data.splits.train.labels.slice(0, 0, nTrain),
                             frozenFeatures(model, data.splits.test, nTest, data, common),
                             data.splits.test.labels.slice(0, 0, nTest), data.numClasses, steps);
}

SslEvaluation SslEvaluation::parse(train::Config &config) {
  SslEvaluation e;
  e.knnBank = config.getInt("knn-bank", e.knnBank, "training images in the k-NN memory bank");
  e.knnQueries = config.getInt("knn-queries", e.knnQueries, "test images the k-NN evaluation classifies");
  e.probeTrain = config.getInt("probe-train", e.probeTrain, "training images of the linear probe (frozen features)");
  e.probeTest = config.getInt("probe-test", e.probeTest, "test images the linear probe classifies");
  e.probeSteps = config.getInt("probe-steps", e.probeSteps, "full-batch AdamW steps of the linear probe (0: no probe)");
  if (e.knnBank <= 0 || e.knnQueries <= 0 || e.probeTrain <= 1 || e.probeTest <= 0 || e.probeSteps < 0)
    throw UsageError("--knn-bank, --knn-queries, --probe-train (> 1) and --probe-test must be positive, "
                     "--probe-steps not negative");
  return e;
}

train::Values SslEvaluation::operator()(models::VisionTransformer &backbone, const ImageData &data,
                                        const train::CommonOptions &common) const {
  train::Values values{{"knn_accuracy", knnAccuracy(backbone, data, common, knnBank, knnQueries)}};
  if (probeSteps > 0) {
    auto probe = linearProbe(backbone, data, common, probeTrain, probeTest, probeSteps);
    values["linear_probe_accuracy"] = probe.accuracy;
    values["linear_probe_ece"] = probe.expectedCalibrationError;
    values["linear_probe_brier"] = probe.brierScore;
  }
  return values;
}

std::function<train::Values(bool)> sslEvaluator(const SslEvaluation &evaluation,
                                                const DiagnosticColumns &diagnostics,
                                                models::VisionTransformer backbone,
                                                const ImageData &data,
                                                const train::CommonOptions &common) {
  train::Values step0;
  {
    train::AutocastScope autocast(common); // as the evaluations in the run
    step0 = evaluation(backbone, data, common);
  }
  return [=, &data, &common](bool final) mutable {
    train::Values values = evaluation(backbone, data, common);
    for (const auto &[name, value] : vitDiagnostics(diagnostics, backbone, data, common))
      values[name] = value;
    if (final)
      for (const auto &[name, value] : step0)
        values[name + "_step0"] = value;
    return values;
  };
}

std::vector<std::string> SslEvaluation::columns() const {
  std::vector<std::string> names{"knn_accuracy", "knn_accuracy_step0"};
  if (probeSteps > 0)
    names.insert(names.end(), {"linear_probe_accuracy", "linear_probe_accuracy_step0", "linear_probe_ece",
                               "linear_probe_ece_step0", "linear_probe_brier", "linear_probe_brier_step0"});
  return names;
}

std::string parseInitOption(train::Config &config) {
  std::string path = config.getString("init", "", "start the ViT from this model.pt (vit-supervised, mp3, distill, "
                                                  "or an SSL recipe's backbone); --resume overrides it");
  if (!path.empty() && !std::filesystem::exists(path))
    throw UsageError("--init: '" + path + "' does not exist");
  return path;
}

int64_t initFromCheckpoint(models::VisionTransformer &model, const std::string &path, bool withHead,
                           bool log, std::vector<std::string> *copiedNames) {
  models::CheckpointMeta meta;
  models::VisionTransformer source{nullptr};
  try {
    source = models::load_vision_transformer(path, &meta);
  } catch (const c10::Error &e) {
    throw UsageError("--init: cannot load '" + path + "' as a ViT checkpoint: " + e.what_without_backtrace());
  }
  // An SSL backbone's head was never trained (the recipes train projectors instead).
  const std::string recipe = meta.count("recipe") ? meta["recipe"] : "";
  // MP3's pretraining backbone was trained through a position head; its class head never was.
  withHead = withHead && recipe != "simclr" && recipe != "polyview" && recipe != "byol" &&
             recipe != "mp3-pretrain";
  torch::NoGradGuard noGrad;
  auto targetParameters = model->named_parameters(), targetBuffers = model->named_buffers();
  auto sourceTensors = source->named_parameters();
  for (const auto &item : source->named_buffers())
    sourceTensors.insert(item.key(), item.value());
  auto shape = [](const torch::Tensor &t) {
    std::string text = "[";
    for (int64_t i = 0; i < t.dim(); ++i)
      text += (i ? ", " : "") + std::to_string(t.size(i));
    return text + "]";
  };
  int64_t copied = 0;
  for (const auto &item : sourceTensors) {
    const std::string &name = item.key();
    bool head = name.rfind("head.", 0) == 0;
    torch::Tensor *target = targetParameters.find(name);
    if (!target)
      target = targetBuffers.find(name);
    if (head && (!withHead || !target || target->sizes() != item.value().sizes()))
      continue;
    if (!target)
      throw UsageError("--init: '" + path + "' holds '" + name + "', which this model lacks: build the "
                       "model with the checkpoint's options (--sigma-reparam, --depth, --pool, ...)");
    if (target->sizes() != item.value().sizes())
      throw UsageError("--init: '" + name + "' is " + shape(item.value()) + " in '" + path + "' but " +
                       shape(*target) + " in this model: build it with the checkpoint's options");
    target->copy_(item.value());
    ++copied;
    if (copiedNames)
      copiedNames->push_back(name);
  }
  // Tensors the checkpoint lacks (an MP3 backbone's position embedding) keep their fresh values.
  const int64_t fresh = int64_t(targetParameters.size() + targetBuffers.size()) - copied;
  if (log)
    std::fprintf(stderr, "init: %lld tensors from %s (recipe %s%s), %lld left fresh\n", (long long)copied,
                 path.c_str(), recipe.empty() ? "?" : recipe.c_str(), withHead ? "" : ", head left fresh",
                 (long long)fresh);
  return copied;
}

EwcPenalty ewcFromCheckpoint(models::VisionTransformer &model, const std::vector<std::string> &fromCheckpoint,
                             const ImageData &data, const train::CommonOptions &common, int64_t samples,
                             double lambda) {
  // The checkpoint's task is self-supervised pre-training on the whole training split: the
  // Fisher is taken there, not only on the --classes the fine-tuning sees.
  const int64_t n = std::min(samples, data.allTrain.size());
  std::vector<torch::Tensor> batches;
  for (int64_t start = 0; start < n; start += common.batchSize)
    batches.push_back(imagesOn(data.allTrain, torch::arange(start, std::min(n, start + common.batchSize), torch::kInt64),
                               data, common));
  bool wasTraining = model->is_training();
  model->eval();
  auto fisher = featureFisherDiagonal(
      *model, [&](const torch::Tensor &images) { return pooledFeatures(model, images); }, batches,
      uint64_t(common.seed));
  model->train(wasTraining);
  torch::OrderedDict<std::string, torch::Tensor> kept;
  for (const auto &name : fromCheckpoint)
    if (const torch::Tensor *f = fisher.find(name))
      kept.insert(name, *f);
  return EwcPenalty(*model, std::move(kept), lambda);
}

train::Values vitDiagnostics(const DiagnosticColumns &columns, models::VisionTransformer &model,
                             const ImageData &data, const train::CommonOptions &common) {
  int64_t n = std::min<int64_t>(256, data.splits.test.size());
  auto images = imagesOn(data.splits.test, torch::arange(n, torch::kInt64), data, common);
  return attentionDiagnostics(columns, *model, *model->encoder, [&] { model->forward(images); });
}

double knnAccuracy(models::VisionTransformer &model, const ImageData &data,
                   const train::CommonOptions &common, int64_t bankSize, int64_t queries) {
  torch::NoGradGuard noGrad;
  bool wasTraining = model->is_training();
  model->eval();
  auto embed = [&](const data::ImageSet &set, int64_t n) {
    return F::normalize(frozenFeatures(model, set, n, data, common), F::NormalizeFuncOptions().dim(1));
  };
  int64_t nBank = std::min(bankSize, data.splits.train.size());
  int64_t nQuery = std::min(queries, data.splits.test.size());
  auto bank = embed(data.splits.train, nBank), query = embed(data.splits.test, nQuery);
  auto bankLabels = data.splits.train.labels.slice(0, 0, nBank);
  auto queryLabels = data.splits.test.labels.slice(0, 0, nQuery);
  models::AutocastExcluded float32Similarities; // features are float32; keep the products so
  int64_t k = std::min<int64_t>(20, nBank);
  auto [similarity, neighbour] = query.matmul(bank.t()).topk(k, 1);
  auto votes = torch::zeros({nQuery, data.numClasses});
  votes.scatter_add_(1, bankLabels.index({neighbour}), (similarity / 0.07).exp());
  model->train(wasTraining);
  return votes.argmax(1).eq(queryLabels).to(torch::kFloat64).mean().item<double>();
}

void saveSslBackbone(const models::VisionTransformer &backbone, const std::string &outDir,
                     const std::string &recipe, const train::Values &finalValues) {
  models::CheckpointMeta meta{{"recipe", recipe}};
  if (auto knn = finalValues.find("knn_accuracy"); knn != finalValues.end())
    meta["knn_accuracy"] = std::to_string(knn->second);
  models::save_checkpoint(backbone, outDir + "/model.pt", meta);
}

} // namespace attn::recipes
