// byol: BYOL on a ViT. The online network (backbone + projector + predictor) regresses the
// target network's projection of another view; the target is an EMA of the online backbone and
// projector. Projector and predictor are Linear → BatchNorm → ReLU → Linear as in the paper, the
// statistics taken per view over the global batch (synchronised across ranks); the target
// normalises with its own batch statistics too (the paper runs it in training mode). --ema-scaling-rule: for a batch κ = batch/reference-batch times the reference,
// momentum ρ → ρ^κ and learning rate η → κ·η ("How to Scale Your EMA", Busbridge et al. 2023).
#include "models/data/Augment.h"
#include "models/data/Sampler.h"
#include "models/recipes/Losses.h"
#include "models/recipes/Recipes.h"
#include "models/recipes/SslModels.h"
#include "models/recipes/Vision.h"
#include "models/train/Schedule.h"

namespace attn::recipes {

namespace {

/// target ← ρ·target + (1 − ρ)·online for parameters; buffers (σReparam's u) are copied.
void emaUpdate(torch::nn::Module &target, const torch::nn::Module &online, double momentum) {
  torch::NoGradGuard noGrad;
  auto targetParams = target.parameters(), onlineParams = online.parameters();
  for (size_t i = 0; i < targetParams.size(); ++i)
    targetParams[i].mul_(momentum).add_(onlineParams[i], 1.0 - momentum);
  auto targetBuffers = target.buffers(), onlineBuffers = online.buffers();
  for (size_t i = 0; i < targetBuffers.size(); ++i)
    targetBuffers[i].copy_(onlineBuffers[i]);
}

} // namespace

int runByol(train::Config &config) {
  const std::string name = "byol";
  train::RecipeDefaults defaults = selfSupervisedDefaults();
  auto common = train::parseCommonOptions(config, name, defaults);
  auto dataOptions = parseImageDataOptions(config);
  auto vitOptions = parseVitOptions(config, common);
  auto views = parseViewOptions(config);
  double momentum = config.getDouble("momentum", 0.99, "target EMA momentum ρ at the reference batch size");
  bool momentumSchedule = config.getBool("momentum-schedule", true, "raise the momentum to 1 along a cosine (BYOL)");
  bool scalingRule = config.getBool(
      "ema-scaling-rule", false,
      "for κ = batch/reference: ρ̂ = ρ^κ with Adam's square-root rule (η̂ = √κ·η, β̂ = 1 − κ(1 − β), "
      "ε̂ = ε/√κ, λ̂ = √κ·λ) and --steps, --warmup-steps counted at the reference batch (÷ κ)");
  int64_t referenceBatch = config.getInt("reference-batch-size", 128, "the batch size ρ, --lr, --steps and --warmup-steps were set for");
  int64_t projectionDim = config.getInt("proj-dim", 64, "projection dimension");
  int64_t projectionHidden = config.getInt("proj-hidden", 256, "projector and predictor hidden width");
  HeadNorm headNorm = parseHeadNorm(config);
  const SslEvaluation evaluation = SslEvaluation::parse(config);
  const std::string initPath = parseInitOption(config);
  if (momentum < 0 || momentum >= 1)
    throw train::UsageError("--momentum must be in [0, 1)");
  if (referenceBatch <= 0)
    throw train::UsageError("--reference-batch-size must be positive");
  if (train::finishOptions(config, name))
    return 0;

  double kappa = double(common.batchSize) / double(referenceBatch);
  train::AdamHyperparameters adam;
  adam.learningRate = common.learningRate;
  adam.weightDecay = common.weightDecay;
  adam.steps = common.steps;
  adam.warmupSteps = common.warmupSteps;
  if (scalingRule) {
    // The optimizer is AdamW, so its own scaling rule goes with the EMA's (SGD's linear rule
    // would be the wrong partner), and the run sees as many examples as at the reference batch.
    momentum = train::scaledEmaMomentum(momentum, kappa);
    try {
      adam = train::scaledAdam(adam, kappa);
    } catch (const std::invalid_argument &error) {
      throw train::UsageError(std::string("--ema-scaling-rule: ") + error.what());
    }
    common.learningRate = adam.learningRate;
    common.weightDecay = adam.weightDecay;
    common.steps = adam.steps;
    common.warmupSteps = adam.warmupSteps;
  }
  train::applyRuntimeOptions(common);
  auto data = loadImageData(dataOptions, common);
  vitOptions = fitVitToData(vitOptions, data);
  views.size = data.imageSize;
  SslEncoder online(vitOptions, projectionHidden, projectionDim, headNorm);
  if (!initPath.empty())
    initFromCheckpoint(online->backbone, initPath, /*withHead=*/false, common.distributed.rank == 0);
  freezeInvariantParameters(*online); // zero-gradient parameters Adam would move on noise
  MlpHead predictor(projectionDim, projectionHidden, projectionDim, common.sigmaReparam, headNorm);
  online->to(common.device, common.dtype);
  predictor->to(common.device, common.dtype);
  auto target = std::dynamic_pointer_cast<SslEncoderImpl>(online->clone());
  target->eval(); // no σReparam power iteration in the target: it follows the online u
  useBatchStatistics(*target); // but BatchNorm uses the batch's statistics, as BYOL's target does
  for (auto &p : target->parameters())
    p.set_requires_grad(false);

  std::vector<torch::Tensor> parameters = online->parameters();
  for (auto &p : predictor->parameters())
    parameters.push_back(p);
  const auto adamOptions = torch::optim::AdamWOptions(common.learningRate)
                               .weight_decay(common.weightDecay)
                               .betas({adam.beta1, adam.beta2})
                               .eps(adam.epsilon);
  torch::optim::AdamW optimizer(
      train::adamWParameterGroups({online.get(), predictor.get()}, adamOptions), adamOptions);
  const auto diagnostics = diagnosticColumns(common.attentionVariant, vitOptions.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "momentum", "lr"};
  const auto evaluationColumns = evaluation.columns();
  columns.insert(columns.end(), evaluationColumns.begin(), evaluationColumns.end());
  std::vector<std::vector<std::string>> panels{{"loss"}, evaluationColumns, {"momentum"}};
  diagnostics.addTo(columns, panels);
  train::Trainer trainer(common, columns, panels);
  trainer.addModule("online", online.ptr());
  trainer.addModule("predictor", predictor.ptr());
  trainer.addModule("target", target); // in sync on every rank: same online params, same updates
  trainer.addOptimizer("adamw", optimizer, common.learningRate);
  auto &distributed = trainer.distributed();
  for (torch::nn::Module *module : {static_cast<torch::nn::Module *>(online.get()),
                                    static_cast<torch::nn::Module *>(predictor.get()),
                                    static_cast<torch::nn::Module *>(target.get())})
    setBatchNormGroup(*module, trainer.sharedDistributed());
  if (distributed.isMain() && scalingRule)
    std::fprintf(stderr,
                 "byol: EMA scaling rule κ = %.4g: momentum %.6g, lr %.4g, betas (%.6g, %.6g), "
                 "eps %.4g, weight decay %.4g, steps %lld, warm-up %lld\n",
                 kappa, momentum, common.learningRate, adam.beta1, adam.beta2, adam.epsilon,
                 common.weightDecay, (long long)common.steps, (long long)common.warmupSteps);
  const auto &train = data.splits.train;
  data::StepSampler sampler(train.size(), common.batchSize, uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());

  auto step = [&](int64_t s) -> train::Values {
    auto idx = sampler.indices(s);
    auto images = train.images.index_select(0, idx);
    int64_t n = images.size(0);
    // One draw for the global batch per (seed, step); this rank keeps its samples' rows.
    auto random = data::SampleRandom::forStep(uint64_t(common.seed), s, common.batchSize,
                                              distributed.rank() * n);
    auto view1 = data.normalisation.apply(data::sslView(images, views, random)).to(common.device, common.dtype);
    auto view2 = data.normalisation.apply(data::sslView(images, views, random)).to(common.device, common.dtype);
    optimizer.zero_grad();
    const auto lossType = common.dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    auto predictions =
        perView(predictor, online->forward(torch::cat({view1, view2}), 2), 2).to(lossType);
    torch::Tensor targets;
    {
      torch::NoGradGuard noGrad;
      targets = target->forward(torch::cat({view2, view1}), 2).to(lossType);
    }
    auto loss = byolLoss(predictions.slice(0, 0, n), targets.slice(0, 0, n)) +
                byolLoss(predictions.slice(0, n), targets.slice(0, n));
    loss.backward();
    distributed.averageGradients(parameters);
    torch::nn::utils::clip_grad_norm_(parameters, 3.0);
    optimizer.step();
    double rho = momentumSchedule ? train::byolMomentum(s, common.steps, momentum) : momentum;
    emaUpdate(*target, *online, rho);
    return {{"loss", loss.item<double>()}, {"momentum", rho}};
  };
  auto evaluate = sslEvaluator(evaluation, diagnostics, online->backbone, data, common);
  auto result = trainer.run(step, evaluate, common.batchSize);
  if (distributed.isMain() && trainer.finished())
    saveSslBackbone(online->backbone, common.outDir, name, result);
  return 0;
}

} // namespace attn::recipes
