// mp3: position prediction as pretraining (Zhai et al., "Position Prediction as an Effective
// Pretraining Strategy", ICML 2022). Phase 1: a ViT without position embeddings classifies the
// position of every patch; every patch is a query, but only a random subset of each image's
// patches (the context) serves as keys and values, so the masked patches are seen only through
// their own content. Phase 2: a ViT with position embeddings starts from those weights and is
// fine-tuned for classification. Each phase writes OUT/pretrain or OUT/finetune; the pretrained
// backbone is OUT/pretrain/model.pt, the fine-tuned model OUT/model.pt.
#include "models/Checkpoint.h"
#include "models/data/Augment.h"
#include "models/data/Sampler.h"
#include "models/recipes/Mp3.h"
#include "models/recipes/Recipes.h"
#include "models/recipes/Vision.h"

#include <filesystem>

namespace attn::recipes {
namespace F = torch::nn::functional;

namespace {

/// Copies every parameter and buffer of `from` whose name and shape exist in `to`.
int64_t copyMatching(torch::nn::Module &to, const torch::nn::Module &from) {
  torch::NoGradGuard noGrad;
  auto source = from.named_parameters();
  auto sourceBuffers = from.named_buffers();
  int64_t copied = 0;
  auto copyFrom = [&](const torch::OrderedDict<std::string, torch::Tensor> &src,
                      torch::OrderedDict<std::string, torch::Tensor> dst) {
    for (auto &item : dst) {
      if (auto *value = src.find(item.key()); value && value->sizes() == item.value().sizes()) {
        item.value().copy_(*value);
        ++copied;
      }
    }
  };
  copyFrom(source, to.named_parameters());
  copyFrom(sourceBuffers, to.named_buffers());
  return copied;
}

} // namespace

torch::Tensor mp3PatchOrder(int64_t batch, int64_t numPatches, const torch::Device &device,
                            data::SampleRandom random) {
  auto like = torch::zeros({1}, torch::kFloat32);
  return random.rand(batch, like, {numPatches}).argsort(int64_t(1), false).to(device);
}

torch::Tensor mp3PositionLogits(models::VisionTransformer &model, models::Projection &head,
                                const torch::Tensor &images, const torch::Tensor &order,
                                int64_t visible) {
  TORCH_CHECK(!model->position_embedding.defined() && !model->class_token.defined(),
              "mp3PositionLogits: the model must have no position embeddings and no class token");
  auto tokens = model->patch_embedding->forward(images); // [B, P, E], row-major patches
  int64_t b = tokens.size(0), p = tokens.size(1), e = tokens.size(2);
  TORCH_CHECK(order.dim() == 2 && order.size(0) == b && order.size(1) == p,
              "mp3PositionLogits: order must be [", b, ", ", p, "], got ", order.sizes());
  TORCH_CHECK(visible >= 1 && visible <= p, "mp3PositionLogits: visible must be in [1, ", p,
              "], got ", visible);
  // Visible patches first: key length `visible` makes them the only keys/values of every layer.
  auto ordered = tokens.gather(1, order.unsqueeze(-1).expand({b, p, e}));
  auto keyLengths = torch::full({b}, visible, torch::TensorOptions().dtype(torch::kInt64));
  return head->forward(model->encoder->forward(ordered, keyLengths)); // [B, P, P]
}

/// MP3's phase 1 on `pretrainModel` (no position embedding); writes OUT/pretrain and
/// OUT/pretrain/model.pt. `group` receives the run's process group. False: stopped early.
static bool pretrainPositions(models::VisionTransformer &pretrainModel, const ImageData &data,
                              const train::CommonOptions &common, int64_t pretrainSteps, double pretrainLr,
                              double maskRatio, std::shared_ptr<train::Distributed> &group) {
  const auto &train = data.splits.train;
  int64_t numPatches = pretrainModel->num_patches();
  int64_t visible = std::max<int64_t>(1, int64_t(std::llround(double(numPatches) * (1.0 - maskRatio))));
  models::Projection positionHead(models::ProjectionOptions(pretrainModel->options.embed_dim(), numPatches)
                                      .sigma_reparam(common.sigmaReparam));
  pretrainModel->to(common.device, common.dtype);
  positionHead->to(common.device, common.dtype);
  std::vector<torch::Tensor> pretrainParameters;
  for (auto *module : std::vector<torch::nn::Module *>{pretrainModel.get(), positionHead.get()})
    for (auto &p : module->parameters())
      pretrainParameters.push_back(p);

  auto pretrainCommon = common;
  pretrainCommon.steps = pretrainSteps;
  pretrainCommon.learningRate = pretrainLr;
  pretrainCommon.outDir = common.outDir + "/pretrain";
  pretrainCommon.recipe = "mp3-pretrain";
  torch::optim::AdamW pretrainOptimizer(
      train::adamWParameterGroups({pretrainModel.get(), positionHead.get()}, pretrainLr,
                                  common.weightDecay),
      torch::optim::AdamWOptions(pretrainLr)
                                                                .weight_decay(common.weightDecay));
  train::Trainer pretrainer(pretrainCommon, {"loss", "position_accuracy", "test_position_accuracy", "lr"},
                            {{"loss"}, {"position_accuracy", "test_position_accuracy"}});
  pretrainer.addModule("model", pretrainModel.ptr());
  pretrainer.addModule("position_head", positionHead.ptr());
  pretrainer.addOptimizer("adamw", pretrainOptimizer, pretrainLr);
  group = pretrainer.sharedDistributed();
  auto &distributed = pretrainer.distributed();
  data::StepSampler sampler(train.size(), common.batchSize, uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());

  // Every patch's position logits [B, P, P]; `positions` [B, P] receives their targets.
  auto positionLogits = [&](const torch::Tensor &images, torch::Tensor &positions,
                            data::SampleRandom random) {
    positions = mp3PatchOrder(images.size(0), numPatches, common.device, random);
    return mp3PositionLogits(pretrainModel, positionHead, images, positions, visible).to(torch::kFloat32);
  };
  auto pretrainStep = [&](int64_t s) -> train::Values {
    auto images = imagesOn(train, sampler.indices(s), data, common);
    pretrainOptimizer.zero_grad();
    torch::Tensor positions;
    // One draw of the masks for the global batch per (seed, step); this rank keeps its rows.
    auto logits = positionLogits(images, positions,
                                 data::SampleRandom::forStep(uint64_t(common.seed), s, common.batchSize,
                                                             distributed.rank() * images.size(0)));
    auto loss = F::cross_entropy(logits.reshape({-1, numPatches}), positions.reshape(-1));
    loss.backward();
    distributed.averageGradients(pretrainParameters);
    torch::nn::utils::clip_grad_norm_(pretrainParameters, 1.0);
    pretrainOptimizer.step();
    double accuracy = logits.argmax(-1).eq(positions).to(torch::kFloat64).mean().item<double>();
    return {{"loss", loss.item<double>()}, {"position_accuracy", accuracy}};
  };
  auto pretrainEvaluate = [&](bool) -> train::Values {
    torch::NoGradGuard noGrad;
    pretrainModel->eval();
    positionHead->eval();
    int64_t n = std::min<int64_t>(1000, data.splits.test.size());
    auto images = imagesOn(data.splits.test, torch::arange(n, torch::kInt64), data, common);
    torch::Tensor positions;
    // The same masks at every evaluation (a stream apart from the training steps').
    auto logits = positionLogits(images, positions,
                                 data::SampleRandom::forStep(uint64_t(common.seed), -1, n, 0));
    pretrainModel->train();
    positionHead->train();
    return {{"test_position_accuracy", logits.argmax(-1).eq(positions).to(torch::kFloat64).mean().item<double>()}};
  };
  auto pretrainResult = pretrainer.run(pretrainStep, pretrainEvaluate, common.batchSize);
  if (!pretrainer.finished())
    return false;
  // The pretrained backbone alone, for fine-tuning elsewhere (vit-supervised --init=OUT/pretrain/
  // model.pt, with --ewc-lambda if wanted): no position embedding, its class head untrained.
  if (distributed.isMain())
    models::save_checkpoint(pretrainModel, pretrainCommon.outDir + "/model.pt",
                            {{"recipe", "mp3-pretrain"}, {"dataset", data.name},
                             {"test_position_accuracy", std::to_string(pretrainResult["test_position_accuracy"])}});
  return true;
}

int runMp3(train::Config &config) {
  const std::string name = "mp3";
  train::RecipeDefaults defaults = selfSupervisedDefaults();
  auto common = train::parseCommonOptions(config, name, defaults);
  auto dataOptions = parseImageDataOptions(config);
  auto vitOptions = parseVitOptions(config, common);
  int64_t pretrainSteps = config.getInt("pretrain-steps", 300, "position-prediction steps (--steps: fine-tuning steps)");
  double pretrainLr = config.getDouble("pretrain-lr", 1e-3, "peak learning rate of the pretraining phase");
  double maskRatio = config.getDouble("mask-ratio", 0.5, "fraction of patches removed from the keys/values (the context)");
  int64_t evalSamples = config.getInt("eval-samples", 2000, "test images in periodic evaluations (the final one uses all)");
  const std::string initPath = config.getString(
      "init", "", "fine-tune this MP3 backbone (an earlier run's OUT/pretrain/model.pt) instead of pretraining");
  if (!initPath.empty() && !std::filesystem::exists(initPath))
    throw train::UsageError("--init: '" + initPath + "' does not exist");
  if (pretrainSteps <= 0)
    throw train::UsageError("--pretrain-steps must be positive");
  if (maskRatio < 0 || maskRatio >= 1)
    throw train::UsageError("--mask-ratio must be in [0, 1)");
  if (train::finishOptions(config, name))
    return 0;

  train::applyRuntimeOptions(common);
  auto data = loadImageData(dataOptions, common);
  vitOptions = fitVitToData(vitOptions, data);
  const auto &train = data.splits.train;

  // Phase 1: no position embeddings, mean pooling; a head over patch positions.
  auto pretrainOptions = vitOptions;
  pretrainOptions.position_embedding(false).pooling(models::Pooling::Mean);
  models::VisionTransformer pretrainModel(pretrainOptions);
  std::shared_ptr<train::Distributed> group; // the pretraining's, reused by the fine-tuning
  if (!initPath.empty()) {
    initFromCheckpoint(pretrainModel, initPath, /*withHead=*/false, common.distributed.rank == 0);
    pretrainModel->to(common.device, common.dtype);
  } else if (!pretrainPositions(pretrainModel, data, common, pretrainSteps, pretrainLr, maskRatio, group)) {
    return 0; // stopped early (--stop-after)
  }

  // Phase 2: positions back on; everything else starts from the pretrained weights.
  models::VisionTransformer model(vitOptions);
  model->to(common.device, common.dtype);
  int64_t copied = copyMatching(*model, *pretrainModel);
  if (common.distributed.rank == 0)
    std::fprintf(stderr, "mp3: fine-tuning from %lld pretrained tensors\n", (long long)copied);
  auto finetuneCommon = common;
  finetuneCommon.outDir = common.outDir + "/finetune";
  finetuneCommon.recipe = "mp3-finetune";
  torch::optim::AdamW optimizer(
      train::adamWParameterGroups({model.get()}, common.learningRate, common.weightDecay),
      torch::optim::AdamWOptions(common.learningRate)
                                                         .weight_decay(common.weightDecay));
  const auto diagnostics = diagnosticColumns(common.attentionVariant, vitOptions.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "accuracy", "test_loss", "test_accuracy", "lr"};
  std::vector<std::vector<std::string>> panels{{"loss", "test_loss"}, {"accuracy", "test_accuracy"}};
  diagnostics.addTo(columns, panels);
  train::Trainer finetuner(finetuneCommon, columns, panels, group);
  auto &distributed = finetuner.distributed();
  data::StepSampler sampler(train.size(), common.batchSize, uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());
  finetuner.addModule("model", model.ptr());
  finetuner.addOptimizer("adamw", optimizer, common.learningRate);
  auto finetuneStep = [&](int64_t s) -> train::Values {
    auto idx = sampler.indices(s);
    auto images = imagesOn(train, idx, data, common);
    auto labels = train.labels.index_select(0, idx).to(common.device);
    optimizer.zero_grad();
    auto logits = model->forward(images).to(torch::kFloat32);
    auto loss = F::cross_entropy(logits, labels);
    loss.backward();
    distributed.averageGradients(model->parameters());
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    return {{"loss", loss.item<double>()},
            {"accuracy", logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>()}};
  };
  auto finetuneEvaluate = [&](bool final) {
    auto values = evaluateClassifier(model, data, common, final ? 0 : evalSamples);
    for (const auto &[name, value] : vitDiagnostics(diagnostics, model, data, common))
      values[name] = value;
    return values;
  };
  auto result = finetuner.run(finetuneStep, finetuneEvaluate, common.batchSize);
  if (distributed.isMain() && finetuner.finished())
    models::save_checkpoint(model, common.outDir + "/model.pt",
                            {{"recipe", name}, {"test_accuracy", std::to_string(result["test_accuracy"])}});
  return 0;
}

} // namespace attn::recipes
