// asr-ctc: a speech transformer (log-mel → conv subsampling → encoder) trained with CTC over
// characters; evaluated by greedy (best-path) decoding as character and word error rates.
#include "models/CharacterVocabulary.h"
#include "models/Checkpoint.h"
#include "models/data/Augment.h"
#include "models/data/Sampler.h"
#include "models/data/SpeechData.h"
#include "models/recipes/Diagnostics.h"
#include "models/recipes/Losses.h"
#include "models/recipes/Recipes.h"
#include "models/train/Run.h"

namespace attn::recipes {
namespace F = torch::nn::functional;

int runAsrCtc(train::Config &config) {
  const std::string name = "asr-ctc";
  train::RecipeDefaults defaults;
  defaults.steps = 600;
  defaults.batchSize = 32;
  defaults.learningRate = 2e-3;
  defaults.warmupSteps = 60;
  defaults.weightDecay = 0.01;
  defaults.evalEvery = 200;
  auto common = train::parseCommonOptions(config, name, defaults);
  std::string dataset = config.getChoice("dataset", "spoken-digits", {"spoken-digits", "pocketsphinx", "list"},
                                         "speech data set");
  std::string trainList = config.getString("train-list", "", "--dataset=list: WAV<TAB>transcript lines for training");
  std::string testList = config.getString("test-list", "", "--dataset=list: WAV<TAB>transcript lines for evaluation");
  models::SpeechTransformerOptions options;
  options.embed_dim(config.getInt("embed-dim", 144, "encoder width"));
  options.depth(config.getInt("depth", 4, "encoder blocks"));
  options.num_heads(config.getInt("heads", 4, "attention heads"));
  options.mlp_ratio(config.getDouble("mlp-ratio", 2.0, "MLP hidden width / encoder width"));
  options.subsampling_channels(config.getInt("subsampling-channels", 32, "channels of the conv subsampling"));
  models::LogMelOptions frontEnd;
  frontEnd.n_mels(config.getInt("n-mels", 40, "mel bins"));
  options.front_end(frontEnd);
  const AttentionDefaults stabilisers = attentionDefaults(common);
  bool qkNorm = config.getBool("qk-norm", stabilisers.qkNorm,
                               "LayerNorm on queries and keys (on with --attention=sigmoid)");
  options.layer_scale_init(config.getDouble("layer-scale", stabilisers.layerScale,
                                            "LayerScale initial value (0: off; 0.1 with --attention=sigmoid)"));
  std::string norm = config.getChoice("norm", "pre", {"pre", "hybrid"}, "pre-norm or hybrid-norm blocks");
  options.norm(norm == "pre" ? models::BlockNorm::PreNorm : models::BlockNorm::HybridNorm);
  if (options.layer_scale_init() < 0)
    throw train::UsageError("--layer-scale must not be negative");
  int64_t timeMasks = config.getInt("time-masks", 0, "SpecAugment-style: zeroed waveform spans per utterance");
  if (options.embed_dim() <= 0 || options.depth() <= 0 || options.num_heads() <= 0 ||
      options.embed_dim() % options.num_heads() != 0)
    throw train::UsageError("--embed-dim must be a positive multiple of --heads, --depth positive");
  if (train::finishOptions(config, name))
    return 0;

  train::applyRuntimeOptions(common);
  auto splits = data::loadSpeech(dataset, common.dataDir, trainList, testList);
  models::AttentionOptions attention(options.embed_dim(), options.num_heads());
  attention.normalizer(common.attentionVariant).qk_norm(qkNorm);
  options.attention(attention).sigma_reparam(common.sigmaReparam);
  models::SpeechTransformer model(options);
  model->to(common.device, common.dtype);
  torch::optim::AdamW optimizer(
      train::adamWParameterGroups({model.get()}, common.learningRate, common.weightDecay),
      torch::optim::AdamWOptions(common.learningRate)
                                                         .weight_decay(common.weightDecay));
  const auto diagnostics = diagnosticColumns(common.attentionVariant, options.depth(), common.sigmaReparam);
  std::vector<std::string> columns{"loss", "test_loss", "test_cer", "test_wer", "lr"};
  std::vector<std::vector<std::string>> panels{{"loss", "test_loss"}, {"test_cer", "test_wer"}};
  diagnostics.addTo(columns, panels);
  train::Trainer trainer(common, columns, panels);
  trainer.addModule("model", model.ptr());
  trainer.addOptimizer("adamw", optimizer, common.learningRate);
  auto &distributed = trainer.distributed();
  int64_t trainSize = int64_t(splits.train.size());
  data::StepSampler sampler(trainSize, std::min(common.batchSize, trainSize), uint64_t(common.seed),
                            distributed.rank(), distributed.worldSize());

  auto ctcLoss = [&](const models::SpeechOutput &out, const data::SpeechBatch &batch) {
    return F::ctc_loss(out.log_probs.to(torch::kFloat32), batch.targets.to(common.device),
                       out.output_lengths, batch.targetLengths.to(common.device),
                       F::CTCLossFuncOptions().blank(models::CharacterVocabulary::kBlank).zero_infinity(true));
  };
  auto step = [&](int64_t s) -> train::Values {
    auto batch = data::collateSpeech(splits.train, sampler.indices(s));
    // Zero random 0–100 ms spans of each utterance (waveform-domain time masks), one draw for
    // the global batch per (seed, step) of which this rank keeps its utterances' rows.
    auto waves = data::randomTimeMasks(
        batch.waveforms, batch.lengths, timeMasks, 1600,
        data::SampleRandom::forStep(uint64_t(common.seed), s, sampler.localBatch() * distributed.worldSize(),
                                    distributed.rank() * sampler.localBatch()));
    optimizer.zero_grad();
    auto out = model->forward(waves.to(common.device, common.dtype), batch.lengths.to(common.device));
    auto loss = ctcLoss(out, batch);
    loss.backward();
    distributed.averageGradients(model->parameters());
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    return {{"loss", loss.item<double>()}};
  };
  std::vector<std::string> lastHypotheses;
  auto evaluate = [&](bool) -> train::Values {
    torch::NoGradGuard noGrad;
    model->eval();
    std::vector<std::string> hypotheses, references;
    double lossSum = 0;
    int64_t n = int64_t(splits.test.size());
    for (int64_t start = 0; start < n; start += 32) {
      auto idx = torch::arange(start, std::min(n, start + 32), torch::kInt64);
      auto batch = data::collateSpeech(splits.test, idx);
      auto out = model->forward(batch.waveforms.to(common.device, common.dtype), batch.lengths.to(common.device));
      lossSum += ctcLoss(out, batch).item<double>() * double(idx.size(0));
      auto decoded = models::CharacterVocabulary::greedy_decode(out.log_probs.to(torch::kFloat32).cpu(),
                                                                out.output_lengths.cpu());
      hypotheses.insert(hypotheses.end(), decoded.begin(), decoded.end());
      references.insert(references.end(), batch.transcripts.begin(), batch.transcripts.end());
    }
    model->train();
    lastHypotheses = hypotheses;
    auto rates = errorRates(hypotheses, references);
    train::Values values{{"test_loss", lossSum / double(n)}, {"test_cer", rates.characterErrorRate},
                         {"test_wer", rates.wordErrorRate}};
    // Attention entropy on the first test batch, σReparam's γ/σ.
    auto first = data::collateSpeech(splits.test, torch::arange(std::min<int64_t>(n, 32), torch::kInt64));
    for (const auto &[name, value] : attentionDiagnostics(diagnostics, *model, *model->encoder, [&] {
           model->forward(first.waveforms.to(common.device, common.dtype), first.lengths.to(common.device));
         }))
      values[name] = value;
    return values;
  };
  trainer.run(step, evaluate, sampler.localBatch() * distributed.worldSize());
  if (distributed.isMain() && trainer.finished()) {
    models::save_checkpoint(model, common.outDir + "/model.pt", {{"recipe", name}, {"dataset", dataset}});
    for (size_t i = 0; i < std::min<size_t>(5, lastHypotheses.size()); ++i)
      std::fprintf(stderr, "  ref: %-40s hyp: %s\n", splits.test[i].transcript.c_str(), lastHypotheses[i].c_str());
  }
  return 0;
}

} // namespace attn::recipes
