// distill: knowledge distillation of a ViT teacher (a model.pt written by vit-supervised or mp3)
// into a student ViT: λ·τ²·KL(teacher_τ ‖ student_τ) + (1 − λ)·CE. The defaults λ = 1, τ = 1
// are pure distillation, as in the distillation scaling-law paper (Busbridge et al. 2025).
#include "models/Checkpoint.h"
#include "models/data/Sampler.h"
#include "models/recipes/Losses.h"
#include "models/recipes/Recipes.h"
#include "models/recipes/Vision.h"

#include <filesystem>

namespace attn::recipes {

int runDistill(train::Config &config) {
  const std::string name = "distill";
  train::RecipeDefaults defaults;
  defaults.steps = 500;
  defaults.batchSize = 128;
  defaults.learningRate = 2e-3;
  defaults.warmupSteps = 50;
  defaults.evalEvery = 250;
  auto common = train::parseCommonOptions(config, name, defaults);
  auto dataOptions = parseImageDataOptions(config);
  auto studentOptions = parseVitOptions(config, common);
  std::string teacherPath = config.getString("teacher", "", "teacher checkpoint (OUT/model.pt of vit-supervised or mp3)");
  double temperature = config.getDouble("temperature", 1.0, "distillation temperature τ");
  double mix = config.getDouble("mix", 1.0, "λ: weight of the distillation term (1 − λ on the labels)");
  auto augment = config.getChoice("augment", "none", {"none", "crop-flip", "randaugment"}, "training augmentation");
  int64_t evalSamples = config.getInt("eval-samples", 2000, "test images in periodic evaluations (the final one uses all)");
  const std::string initPath = parseInitOption(config);
  if (temperature <= 0)
    throw train::UsageError("--temperature must be positive");
  if (mix < 0 || mix > 1)
    throw train::UsageError("--mix (λ) must be in [0, 1]");
  if (train::finishOptions(config, name))
    return 0;
  if (teacherPath.empty())
    throw train::UsageError("--teacher=PATH is required (e.g. runs/vit-supervised/model.pt)");
  if (!std::filesystem::exists(teacherPath))
    throw train::UsageError("teacher checkpoint '" + teacherPath + "' does not exist");

  train::applyRuntimeOptions(common);
  auto data = loadImageData(dataOptions, common);
  studentOptions = fitVitToData(studentOptions, data);
  models::VisionTransformer teacher{nullptr};
  try {
    teacher = models::load_vision_transformer(teacherPath);
  } catch (const c10::Error &e) {
    throw train::UsageError("cannot load teacher '" + teacherPath + "': " + e.what_without_backtrace());
  }
  if (teacher->options.num_classes() != data.numClasses ||
      teacher->options.image_size() != data.imageSize || teacher->options.in_channels() != data.channels)
    throw train::UsageError("teacher '" + teacherPath + "' was trained on other images or classes than --dataset=" + data.name);
  teacher->to(common.device, common.dtype);
  teacher->eval();
  for (auto &p : teacher->parameters())
    p.set_requires_grad(false);

  models::VisionTransformer student(studentOptions);
  if (!initPath.empty())
    initFromCheckpoint(student, initPath, /*withHead=*/true, common.distributed.rank == 0);
  student->to(common.device, common.dtype);
  torch::optim::AdamW optimizer(
      train::adamWParameterGroups({student.get()}, common.learningRate, common.weightDecay),
      torch::optim::AdamWOptions(common.learningRate)
                                                           .weight_decay(common.weightDecay));
  const auto diagnostics = diagnosticColumns(common.attentionVariant, studentOptions.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "accuracy", "test_loss", "test_accuracy", "teacher_test_accuracy", "lr"};
  std::vector<std::vector<std::string>> panels{{"loss", "test_loss"}, {"accuracy", "test_accuracy", "teacher_test_accuracy"}};
  diagnostics.addTo(columns, panels);
  train::Trainer trainer(common, columns, panels);
  trainer.addModule("student", student.ptr());
  trainer.addOptimizer("adamw", optimizer, common.learningRate);
  auto &distributed = trainer.distributed();
  const auto &train = data.splits.train;
  data::StepSampler sampler(train.size(), common.batchSize, uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());
  double teacherAccuracy = [&] {
    train::AutocastScope autocast(common); // as the student's evaluations
    return evaluateClassifier(teacher, data, common, 0)["test_accuracy"];
  }();

  auto step = [&](int64_t s) -> train::Values {
    auto idx = sampler.indices(s);
    // One draw for the global batch per (seed, step); this rank keeps its samples' rows.
    auto random = data::SampleRandom::forStep(uint64_t(common.seed), s, common.batchSize,
                                              distributed.rank() * idx.size(0));
    auto images = imagesOn(train, idx, data, common, augment, random);
    auto labels = train.labels.index_select(0, idx).to(common.device);
    torch::Tensor teacherLogits;
    {
      torch::NoGradGuard noGrad;
      teacherLogits = teacher->forward(images).to(torch::kFloat32);
    }
    optimizer.zero_grad();
    auto logits = student->forward(images).to(torch::kFloat32);
    auto loss = distillationLoss(logits, teacherLogits, labels, temperature, mix);
    loss.backward();
    distributed.averageGradients(student->parameters());
    torch::nn::utils::clip_grad_norm_(student->parameters(), 1.0);
    optimizer.step();
    return {{"loss", loss.item<double>()},
            {"accuracy", logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>()}};
  };
  auto evaluate = [&](bool final) {
    auto values = evaluateClassifier(student, data, common, final ? 0 : evalSamples);
    values["teacher_test_accuracy"] = teacherAccuracy;
    for (const auto &[name, value] : vitDiagnostics(diagnostics, student, data, common))
      values[name] = value;
    return values;
  };
  auto result = trainer.run(step, evaluate, common.batchSize);
  if (distributed.isMain() && trainer.finished())
    models::save_checkpoint(student, common.outDir + "/model.pt",
                            {{"recipe", name}, {"teacher", teacherPath},
                             {"test_accuracy", std::to_string(result["test_accuracy"])}});
  return 0;
}

} // namespace attn::recipes
