// The recipes of attn-train. Each reads its options from a Config, trains, writes metrics,
// plots and checkpoints to --out, and returns the process exit code. User mistakes are thrown
// as attn::train::UsageError.
#ifndef MODELS_RECIPES_RECIPES_H
#define MODELS_RECIPES_RECIPES_H

#include "models/train/Config.h"
#include "models/train/Optimizer.h"
#include "models/train/Run.h"

#include <functional>
#include <map>
#include <string>

namespace attn::recipes {

int runVitSupervised(train::Config &config);
int runSimclr(train::Config &config);
int runPolyview(train::Config &config);
int runByol(train::Config &config);
int runMp3(train::Config &config);
int runDistill(train::Config &config);
int runAsrCtc(train::Config &config);

/// Defaults of the attention stabilisers for the run's --attention. With a sigmoid normalizer
/// (`sigmoid`, whose bias is −ln n for n keys, or `sigmoid(bias=B)`): QK-norm on and LayerScale
/// at 0.1, as "Theory, Analysis, and Best Practices for Sigmoid Self-Attention" (Ramapuram et
/// al. 2024) trains sigmoid attention for vision and speech (0.1: CaiT's LayerScale value up to
/// depth 18); hybrid-norm stays available as --norm=hybrid. Other normalizers: both off.
/// Explicit --qk-norm / --layer-scale flags override these.
struct AttentionDefaults {
  bool qkNorm = false;
  double layerScale = 0.0;
};
bool isSigmoidAttention(const train::CommonOptions &common);
AttentionDefaults attentionDefaults(const train::CommonOptions &common);

struct RecipeEntry {
  std::function<int(train::Config &)> run;
  std::string summary;
};
/// Name → recipe, in the order `attn-train --help` lists them.
const std::map<std::string, RecipeEntry> &allRecipes();

} // namespace attn::recipes

#endif // MODELS_RECIPES_RECIPES_H
