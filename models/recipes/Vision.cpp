#include "models/recipes/Vision.h"

#include "models/recipes/Recipes.h"

#include "models/Autocast.h"
#include "models/Checkpoint.h"

#include "models/data/Augment.h"

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
  return o;
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

double knnAccuracy(models::VisionTransformer &model, const ImageData &data,
                   const train::CommonOptions &common, int64_t bankSize, int64_t queries) {
  torch::NoGradGuard noGrad;
  bool wasTraining = model->is_training();
  model->eval();
  auto embed = [&](const data::ImageSet &set, int64_t n) {
    std::vector<torch::Tensor> parts;
    for (int64_t start = 0; start < n; start += 500) {
      auto idx = torch::arange(start, std::min(n, start + 500), torch::kInt64);
      parts.push_back(pooledFeatures(model, imagesOn(set, idx, data, common)).to(torch::kFloat32).cpu());
    }
    return F::normalize(torch::cat(parts), F::NormalizeFuncOptions().dim(1));
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
