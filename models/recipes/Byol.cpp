// byol: BYOL on a ViT. The online network (backbone + projector + predictor) regresses the
// target network's projection of another view; the target is an EMA of the online backbone and
// projector. Projector and predictor are Linear → BatchNorm → ReLU → Linear as in the paper, the
// statistics taken per view over the global batch (synchronised across ranks); the target
// normalises with its own batch statistics too (the paper runs it in training mode).
// --ema-scaling-rule: for a batch κ = batch/reference-batch times the reference, momentum
// ρ → ρ^κ with AdamW's own square-root rule ("How to Scale Your EMA", Busbridge et al. 2023).
// --objective=er: the ER bound instead of 2 − 2·cos (ErBound.h). --predictor=bayesian: BYOV, a
// Bayes-by-Backprop predictor (BayesianHead.h) whose KL to the prior joins the loss; its weight
// samples come from a generator of (seed, step), like the augmentations, so W processes equal one
// and evaluating does not change the training run.
#include "models/data/Augment.h"
#include "models/data/Sampler.h"
#include "models/recipes/BayesianHead.h"
#include "models/recipes/ErBound.h"
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
  const bool erObjective =
      config.getChoice("objective", "byol", {"byol", "er"},
                       "byol: 2 − 2·cos(prediction, target); er: maximise the ER bound Ĥ(online projections) + "
                       "E log q_vMF(target | prediction) (Rodríguez-Gálvez et al. 2023)") == "er";
  double erKappa = config.getDouble("er-kappa", 10.0, "von Mises–Fisher concentration κ of the ER bound's kernel and reconstruction");
  const bool bayesianPredictor =
      config.getChoice("predictor", "mlp", {"mlp", "bayesian"},
                       "mlp: BYOL's predictor; bayesian: BYOV's Bayes-by-Backprop predictor (Gaussian "
                       "posterior per weight, KL to the prior added to the loss)") == "bayesian";
  double priorSigma = config.getDouble("prior-sigma", 0.1, "BYOV: standard deviation σ_p of the predictor weights' N(0, σ_p²) prior");
  double klWeight = config.getDouble("kl-weight", 1.0, "BYOV: weight β of KL(q ‖ prior)/(training images) in the loss");
  const SslEvaluation evaluation = SslEvaluation::parse(config);
  const std::string initPath = parseInitOption(config);
  if (momentum < 0 || momentum >= 1)
    throw train::UsageError("--momentum must be in [0, 1)");
  if (referenceBatch <= 0)
    throw train::UsageError("--reference-batch-size must be positive");
  if (!(erKappa > 0))
    throw train::UsageError("--er-kappa must be positive");
  if (!(priorSigma > 0) || klWeight < 0)
    throw train::UsageError("--prior-sigma must be positive and --kl-weight not negative");
  if (bayesianPredictor && headNorm != HeadNorm::Batch)
    throw train::UsageError("--predictor=bayesian has BYOL's BatchNorm predictor: drop --head-norm=layer");
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
  // One of the two predictors; `predict` runs it per view (batch statistics per view).
  MlpHead mlpPredictor{nullptr};
  BayesianMlpHead bayesPredictor{nullptr};
  std::shared_ptr<torch::nn::Module> predictor;
  if (bayesianPredictor) {
    bayesPredictor = BayesianMlpHead(projectionDim, projectionHidden, projectionDim, priorSigma);
    predictor = bayesPredictor.ptr();
  } else {
    mlpPredictor = MlpHead(projectionDim, projectionHidden, projectionDim, common.sigmaReparam, headNorm);
    predictor = mlpPredictor.ptr();
  }
  // BYOV: one weight sample per view for the whole global batch, drawn from the step's generator.
  auto predict = [&](const torch::Tensor &x, int64_t step) {
    if (!bayesianPredictor)
      return perView(mlpPredictor, x, 2);
    auto generator = posteriorSampleGenerator(uint64_t(common.seed), step);
    std::vector<torch::Tensor> outputs;
    for (const auto &chunk : x.chunk(2, 0))
      outputs.push_back(bayesPredictor->forward(chunk, /*useMean=*/false, &generator));
    return torch::cat(outputs);
  };
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
  // BYOV's posterior parameters (μ, ρ) have the prior's KL as their regulariser: no weight decay.
  auto groups = train::adamWParameterGroups(
      bayesianPredictor ? std::vector<const torch::nn::Module *>{online.get()}
                        : std::vector<const torch::nn::Module *>{online.get(), predictor.get()},
      adamOptions);
  if (bayesianPredictor) {
    auto plain = std::make_unique<torch::optim::AdamWOptions>(adamOptions);
    plain->weight_decay(0.0);
    groups.emplace_back(predictor->parameters(), std::move(plain));
  }
  torch::optim::AdamW optimizer(groups, adamOptions);
  const auto diagnostics = diagnosticColumns(common.attentionVariant, vitOptions.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "momentum", "lr"};
  if (erObjective)
    columns.insert(columns.end(), {"er_entropy", "er_reconstruction"});
  if (bayesianPredictor)
    columns.insert(columns.end(), {"kl", "predictor_sigma", "predictive_std"});
  const auto evaluationColumns = evaluation.columns();
  columns.insert(columns.end(), evaluationColumns.begin(), evaluationColumns.end());
  std::vector<std::vector<std::string>> panels{{"loss"}, evaluationColumns, {"momentum"}};
  if (erObjective)
    panels.push_back({"er_entropy", "er_reconstruction"});
  if (bayesianPredictor)
    panels.insert(panels.end(), {{"kl"}, {"predictor_sigma", "predictive_std"}});
  diagnostics.addTo(columns, panels);
  train::Trainer trainer(common, columns, panels);
  trainer.addModule("online", online.ptr());
  trainer.addModule("predictor", predictor);
  trainer.addModule("target", target); // in sync on every rank: same online params, same updates
  trainer.addOptimizer("adamw", optimizer, common.learningRate);
  auto &distributed = trainer.distributed();
  for (torch::nn::Module *module : {static_cast<torch::nn::Module *>(online.get()),
                                    predictor.get(),
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
    auto projections = online->forward(torch::cat({view1, view2}), 2);
    auto predictions = predict(projections, s).to(lossType);
    torch::Tensor targets;
    {
      torch::NoGradGuard noGrad;
      targets = target->forward(torch::cat({view2, view1}), 2).to(lossType);
    }
    train::Values values;
    torch::Tensor loss;
    if (erObjective) {
      // Each view's prediction reconstructs the other view's target; the entropy is estimated
      // on the online projections of the predicting view, the branch that carries gradients
      // (the target, an EMA of it, has none). Symmetrised over the two views as BYOL's loss.
      projections = projections.to(lossType);
      auto a = erBound(projections.slice(0, 0, n), predictions.slice(0, 0, n), targets.slice(0, 0, n), erKappa);
      auto b = erBound(projections.slice(0, n), predictions.slice(0, n), targets.slice(0, n), erKappa);
      loss = a.loss() + b.loss();
      values["er_entropy"] = 0.5 * (a.entropy + b.entropy).item<double>();
      values["er_reconstruction"] = 0.5 * (a.reconstruction + b.reconstruction).item<double>();
    } else {
      loss = byolLoss(predictions.slice(0, 0, n), targets.slice(0, 0, n)) +
             byolLoss(predictions.slice(0, n), targets.slice(0, n));
    }
    values["loss"] = loss.item<double>();
    if (bayesianPredictor) {
      // The ELBO per training image: the data term is this batch's mean, the KL counts once
      // for the whole training set.
      auto kl = bayesPredictor->kl();
      (loss + klWeight * kl / double(train.size())).backward();
      values["kl"] = kl.item<double>();
      values["predictor_sigma"] = meanPosteriorSigma(*bayesPredictor);
    } else {
      loss.backward();
    }
    distributed.averageGradients(parameters);
    torch::nn::utils::clip_grad_norm_(parameters, 3.0);
    optimizer.step();
    double rho = momentumSchedule ? train::byolMomentum(s, common.steps, momentum) : momentum;
    emaUpdate(*target, *online, rho);
    values["momentum"] = rho;
    return values;
  };
  auto sslEvaluate = sslEvaluator(evaluation, diagnostics, online->backbone, data, common);
  auto evaluate = [&](bool final) {
    auto values = sslEvaluate(final);
    if (bayesianPredictor) { // BYOV's label-free uncertainty on the first 256 test images
      torch::NoGradGuard noGrad;
      online->eval();
      auto images = imagesOn(data.splits.test, torch::arange(std::min<int64_t>(256, data.splits.test.size())),
                             data, common);
      auto generator = posteriorSampleGenerator(uint64_t(common.seed), -1);
      values["predictive_std"] = predictiveStd(*bayesPredictor, online->forward(images), 16, &generator);
      online->train();
    }
    return values;
  };
  auto result = trainer.run(step, evaluate, common.batchSize);
  if (distributed.isMain() && trainer.finished())
    saveSslBackbone(online->backbone, common.outDir, name, result);
  return 0;
}

} // namespace attn::recipes
