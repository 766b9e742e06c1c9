// mp3: position prediction as pretraining (Zhai et al., "Position Prediction as an Effective
// Pretraining Strategy", 2022). Phase 1: a ViT without position embeddings sees a random subset
// of each image's patches (the rest are masked out of the context) and classifies every visible
// patch's position. Phase 2: a ViT with position embeddings starts from those weights and is
// fine-tuned for classification. Each phase writes OUT/pretrain or OUT/finetune.
#include "models/Checkpoint.h"
#include "models/data/Augment.h"
#include "models/data/Sampler.h"
#include "models/recipes/Recipes.h"
#include "models/recipes/Vision.h"

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

int runMp3(train::Config &config) {
  const std::string name = "mp3";
  train::RecipeDefaults defaults = selfSupervisedDefaults();
  auto common = train::parseCommonOptions(config, name, defaults);
  auto dataOptions = parseImageDataOptions(config);
  auto vitOptions = parseVitOptions(config, common);
  int64_t pretrainSteps = config.getInt("pretrain-steps", 300, "position-prediction steps (--steps: fine-tuning steps)");
  double pretrainLr = config.getDouble("pretrain-lr", 1e-3, "peak learning rate of the pretraining phase");
  double maskRatio = config.getDouble("mask-ratio", 0.5, "fraction of patches removed from the context");
  int64_t evalSamples = config.getInt("eval-samples", 2000, "test images in periodic evaluations (the final one uses all)");
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
  int64_t numPatches = pretrainModel->num_patches();
  int64_t visible = std::max<int64_t>(1, int64_t(std::llround(double(numPatches) * (1.0 - maskRatio))));
  models::Projection positionHead(models::ProjectionOptions(vitOptions.embed_dim(), numPatches)
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
  torch::optim::AdamW pretrainOptimizer(pretrainParameters, torch::optim::AdamWOptions(pretrainLr)
                                                                .weight_decay(common.weightDecay));
  train::Trainer pretrainer(pretrainCommon, {"loss", "position_accuracy", "test_position_accuracy", "lr"},
                            {{"loss"}, {"position_accuracy", "test_position_accuracy"}});
  pretrainer.addModule("model", pretrainModel.ptr());
  pretrainer.addModule("position_head", positionHead.ptr());
  pretrainer.addOptimizer("adamw", pretrainOptimizer, pretrainLr);
  auto &distributed = pretrainer.distributed();
  data::StepSampler sampler(train.size(), common.batchSize, uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());

  // Visible patches per sample (random subset), their features and position logits.
  auto positionLogits = [&](const torch::Tensor &images, torch::Tensor &positions) {
    int64_t b = images.size(0);
    auto tokens = pretrainModel->patch_embedding->forward(images); // [B, P, E]
    positions = torch::rand({b, numPatches}).argsort(int64_t(1), false).slice(1, 0, visible).to(common.device);
    auto kept = tokens.gather(1, positions.unsqueeze(-1).expand({b, visible, tokens.size(2)}));
    auto features = pretrainModel->encoder->forward(kept);
    return positionHead->forward(features).to(torch::kFloat32); // [B, V, P]
  };
  auto pretrainStep = [&](int64_t s) -> train::Values {
    auto images = imagesOn(train, sampler.indices(s), data, common);
    pretrainOptimizer.zero_grad();
    torch::Tensor positions;
    auto logits = positionLogits(images, positions);
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
    auto logits = positionLogits(images, positions);
    pretrainModel->train();
    positionHead->train();
    return {{"test_position_accuracy", logits.argmax(-1).eq(positions).to(torch::kFloat64).mean().item<double>()}};
  };
  pretrainer.run(pretrainStep, pretrainEvaluate, common.batchSize);
  if (!pretrainer.finished())
    return 0;

  // Phase 2: positions back on; everything else starts from the pretrained weights.
  models::VisionTransformer model(vitOptions);
  model->to(common.device, common.dtype);
  int64_t copied = copyMatching(*model, *pretrainModel);
  if (distributed.isMain())
    std::fprintf(stderr, "mp3: fine-tuning from %lld pretrained tensors\n", (long long)copied);
  auto finetuneCommon = common;
  finetuneCommon.outDir = common.outDir + "/finetune";
  finetuneCommon.recipe = "mp3-finetune";
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(common.learningRate)
                                                         .weight_decay(common.weightDecay));
  train::Trainer finetuner(finetuneCommon, {"loss", "accuracy", "test_loss", "test_accuracy", "lr"},
                           {{"loss", "test_loss"}, {"accuracy", "test_accuracy"}},
                           pretrainer.sharedDistributed());
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
    return evaluateClassifier(model, data, common, final ? 0 : evalSamples);
  };
  auto result = finetuner.run(finetuneStep, finetuneEvaluate, common.batchSize);
  if (distributed.isMain() && finetuner.finished())
    models::save_checkpoint(model, common.outDir + "/model.pt",
                            {{"recipe", name}, {"test_accuracy", std::to_string(result["test_accuracy"])}});
  return 0;
}

} // namespace attn::recipes
