// vit-supervised: a ViT classifier trained with cross-entropy (AdamW, warm-up + cosine); with
// --init, fine-tuning from a checkpoint, optionally held near it by EWC (--ewc-lambda, Ewc.h).
#include "models/Checkpoint.h"
#include "models/data/Sampler.h"
#include "models/recipes/Ewc.h"
#include "models/recipes/Recipes.h"
#include "models/recipes/Vision.h"

namespace attn::recipes {
namespace F = torch::nn::functional;

int runVitSupervised(train::Config &config) {
  const std::string name = "vit-supervised";
  train::RecipeDefaults defaults;
  defaults.steps = 1500;
  defaults.batchSize = 128;
  defaults.learningRate = 2e-3;
  defaults.warmupSteps = 100;
  defaults.evalEvery = 250;
  auto common = train::parseCommonOptions(config, name, defaults);
  auto dataOptions = parseImageDataOptions(config);
  auto vitOptions = parseVitOptions(config, common);
  auto augment = config.getChoice("augment", "none", {"none", "crop-flip", "randaugment"},
                                  "training augmentation");
  double labelSmoothing = config.getDouble("label-smoothing", 0.0, "cross-entropy label smoothing");
  double clipNorm = config.getDouble("clip-grad-norm", 1.0, "gradient norm clip (0: off)");
  int64_t evalSamples = config.getInt("eval-samples", 2000, "test images in periodic evaluations (the final one uses all)");
  const std::string initPath = parseInitOption(config);
  double ewcLambda = config.getDouble(
      "ewc-lambda", 0.0,
      "EWC strength λ: adds (λ/2)·Σ F_i (θ_i − θ*_i)² toward the --init checkpoint's tensors, F the "
      "diagonal Fisher of its features at θ* (0: off)");
  int64_t ewcSamples = config.getInt("ewc-samples", 1024, "training images the EWC Fisher is estimated on");
  if (ewcLambda < 0)
    throw train::UsageError("--ewc-lambda must not be negative");
  if (ewcLambda > 0 && initPath.empty())
    throw train::UsageError("--ewc-lambda needs --init: EWC holds the model near a checkpoint");
  if (ewcSamples <= 0)
    throw train::UsageError("--ewc-samples must be positive");
  if (finishOptions(config, name))
    return 0;

  train::applyRuntimeOptions(common);
  auto data = loadImageData(dataOptions, common);
  vitOptions = fitVitToData(vitOptions, data);
  models::VisionTransformer model(vitOptions);
  std::vector<std::string> fromCheckpoint;
  if (!initPath.empty()) // fine-tuning, e.g. from an SSL recipe's OUT/model.pt
    initFromCheckpoint(model, initPath, /*withHead=*/true, common.distributed.rank == 0, &fromCheckpoint);
  model->to(common.device, common.dtype);
  EwcPenalty ewc;
  if (ewcLambda > 0) {
    ewc = ewcFromCheckpoint(model, fromCheckpoint, data, common, ewcSamples, ewcLambda);
    if (common.distributed.rank == 0)
      std::fprintf(stderr, "ewc: λ = %g, Fisher over %lld images, ΣF = %.6g\n", ewcLambda,
                   (long long)std::min(ewcSamples, data.splits.train.size()), ewc.fisherTotal());
  }

  torch::optim::AdamW optimizer(
      train::adamWParameterGroups({model.get()}, common.learningRate, common.weightDecay),
      torch::optim::AdamWOptions(common.learningRate)
                                                         .weight_decay(common.weightDecay));
  const auto diagnostics = diagnosticColumns(common.attentionVariant, vitOptions.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "accuracy", "test_loss", "test_accuracy", "lr"};
  std::vector<std::vector<std::string>> panels{{"loss", "test_loss"}, {"accuracy", "test_accuracy"}};
  if (ewc.active()) {
    columns.push_back("ewc_penalty");
    panels.push_back({"ewc_penalty"});
  }
  diagnostics.addTo(columns, panels);
  train::Trainer trainer(common, columns, panels);
  trainer.addModule("model", model.ptr());
  trainer.addOptimizer("adamw", optimizer, common.learningRate);
  auto &distributed = trainer.distributed();
  const auto &train = data.splits.train;
  data::StepSampler sampler(train.size(), common.batchSize, uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());

  auto step = [&](int64_t s) -> train::Values {
    auto idx = sampler.indices(s);
    // One draw for the global batch per (seed, step); this rank keeps its samples' rows.
    auto random = data::SampleRandom::forStep(uint64_t(common.seed), s, common.batchSize,
                                              distributed.rank() * idx.size(0));
    auto images = imagesOn(train, idx, data, common, augment, random);
    auto labels = train.labels.index_select(0, idx).to(common.device);
    optimizer.zero_grad();
    auto logits = model->forward(images).to(torch::kFloat32);
    auto loss = F::cross_entropy(logits, labels,
                                 F::CrossEntropyFuncOptions().label_smoothing(labelSmoothing));
    train::Values values;
    if (ewc.active()) {
      auto penalty = ewc(); // the same on every rank: its gradient survives the averaging
      values["ewc_penalty"] = penalty.item<double>();
      (loss + penalty).backward();
    } else {
      loss.backward();
    }
    distributed.averageGradients(model->parameters());
    if (clipNorm > 0)
      torch::nn::utils::clip_grad_norm_(model->parameters(), clipNorm);
    optimizer.step();
    double accuracy = logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
    values["loss"] = loss.item<double>();
    values["accuracy"] = accuracy;
    return values;
  };
  auto evaluate = [&](bool final) {
    auto values = evaluateClassifier(model, data, common, final ? 0 : evalSamples);
    for (const auto &[name, value] : vitDiagnostics(diagnostics, model, data, common))
      values[name] = value;
    return values;
  };
  auto result = trainer.run(step, evaluate, common.batchSize);
  if (distributed.isMain() && trainer.finished())
    models::save_checkpoint(model, common.outDir + "/model.pt",
                            {{"recipe", name}, {"dataset", data.name},
                             {"test_accuracy", std::to_string(result["test_accuracy"])}});
  return 0;
}

} // namespace attn::recipes
