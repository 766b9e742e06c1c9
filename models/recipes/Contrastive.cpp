// simclr and polyview: contrastive SSL on a ViT. simclr: two views, NT-Xent. polyview: M ≥ 2
// views with the poly-view geometric or arithmetic one-vs-rest objective, or the multi-crop
// baseline (all view pairs). Negatives come from the global batch (gathered across ranks).
#include "models/data/Augment.h"
#include "models/data/Sampler.h"
#include "models/recipes/Losses.h"
#include "models/recipes/Recipes.h"
#include "models/recipes/SslModels.h"
#include "models/recipes/Vision.h"

namespace attn::recipes {

namespace {

enum class Objective { NtXent, Geometric, Arithmetic, MultiCrop };

int runContrastive(train::Config &config, const std::string &name, bool polyview) {
  train::RecipeDefaults defaults = selfSupervisedDefaults();
  auto common = train::parseCommonOptions(config, name, defaults);
  auto dataOptions = parseImageDataOptions(config);
  auto vitOptions = parseVitOptions(config, common);
  auto views = parseViewOptions(config);
  double temperature = config.getDouble("temperature", 0.2, "similarity temperature τ");
  int64_t projectionDim = config.getInt("proj-dim", 64, "projection dimension");
  int64_t projectionHidden = config.getInt("proj-hidden", 256, "projector hidden width");
  HeadNorm headNorm = parseHeadNorm(config);
  const SslEvaluation evaluation = SslEvaluation::parse(config);
  const std::string initPath = parseInitOption(config);
  Objective objective = Objective::NtXent;
  int64_t numViews = 2;
  if (polyview) {
    numViews = config.getInt("views", 4, "views per sample (M >= 2)");
    std::string loss = config.getChoice("loss", "geometric", {"geometric", "arithmetic", "multicrop"},
                                        "poly-view objective or the multi-crop baseline");
    objective = loss == "geometric"    ? Objective::Geometric
                : loss == "arithmetic" ? Objective::Arithmetic
                                       : Objective::MultiCrop;
    if (numViews < 2)
      throw train::UsageError("--views must be at least 2, got " + std::to_string(numViews));
  }
  if (temperature <= 0)
    throw train::UsageError("--temperature must be positive");
  if (train::finishOptions(config, name))
    return 0;

  train::applyRuntimeOptions(common);
  auto data = loadImageData(dataOptions, common);
  vitOptions = fitVitToData(vitOptions, data);
  views.size = data.imageSize;
  SslEncoder encoder(vitOptions, projectionHidden, projectionDim, headNorm);
  if (!initPath.empty())
    initFromCheckpoint(encoder->backbone, initPath, /*withHead=*/false, common.distributed.rank == 0);
  freezeInvariantParameters(*encoder); // zero-gradient parameters Adam would move on noise
  encoder->to(common.device, common.dtype);
  torch::optim::AdamW optimizer(
      train::adamWParameterGroups({encoder.get()}, common.learningRate, common.weightDecay),
      torch::optim::AdamWOptions(common.learningRate)
                                                           .weight_decay(common.weightDecay));
  const auto diagnostics = diagnosticColumns(common.attentionVariant, vitOptions.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "lr"};
  const auto evaluationColumns = evaluation.columns();
  columns.insert(columns.end(), evaluationColumns.begin(), evaluationColumns.end());
  std::vector<std::vector<std::string>> panels{{"loss"}, evaluationColumns};
  diagnostics.addTo(columns, panels);
  train::Trainer trainer(common, columns, panels);
  trainer.addModule("encoder", encoder.ptr());
  trainer.addOptimizer("adamw", optimizer, common.learningRate);
  auto &distributed = trainer.distributed();
  // SimCLR's "global BN": the projector's statistics are the global batch's (all views at once).
  setBatchNormGroup(*encoder, trainer.sharedDistributed());
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
    std::vector<torch::Tensor> batch;
    for (int64_t v = 0; v < numViews; ++v)
      batch.push_back(data.normalisation.apply(data::sslView(images, views, random)));
    optimizer.zero_grad();
    const auto lossType = common.dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    auto z = encoder->forward(torch::cat(batch).to(common.device, common.dtype)).to(lossType);
    // [M·n, D] → [n, M, D], gathered over ranks along the sample axis → [M, N, D].
    auto local = z.view({numViews, n, -1}).transpose(0, 1);
    auto all = distributed.gatherWithLocalGradient(local.contiguous()).transpose(0, 1);
    torch::Tensor loss;
    switch (objective) {
    case Objective::NtXent: loss = ntXentLoss(all[0], all[1], temperature); break;
    case Objective::Geometric: loss = polyViewLoss(all, temperature, PolyViewAggregation::Geometric); break;
    case Objective::Arithmetic: loss = polyViewLoss(all, temperature, PolyViewAggregation::Arithmetic); break;
    case Objective::MultiCrop: loss = multiCropLoss(all, temperature); break;
    }
    loss.backward();
    // Every rank computed the global loss; its gradient reaches each rank's own samples only.
    distributed.sumGradients(encoder->parameters());
    torch::nn::utils::clip_grad_norm_(encoder->parameters(), 3.0);
    optimizer.step();
    // Every rank holds the same global loss, so the mean over ranks the trainer reports is it.
    return {{"loss", loss.item<double>()}};
  };
  auto evaluate = sslEvaluator(evaluation, diagnostics, encoder->backbone, data, common);
  auto result = trainer.run(step, evaluate, common.batchSize);
  if (distributed.isMain() && trainer.finished())
    saveSslBackbone(encoder->backbone, common.outDir, name, result);
  return 0;
}

} // namespace

int runSimclr(train::Config &config) { return runContrastive(config, "simclr", false); }
int runPolyview(train::Config &config) { return runContrastive(config, "polyview", true); }

} // namespace attn::recipes
