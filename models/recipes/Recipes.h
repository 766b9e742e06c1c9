// The recipes of attn-train. Each reads its options from a Config, trains, writes metrics,
// plots and checkpoints to --out, and returns the process exit code. User mistakes are thrown
// as attn::train::UsageError.
#ifndef MODELS_RECIPES_RECIPES_H
#define MODELS_RECIPES_RECIPES_H

#include "models/train/Config.h"
#include "models/train/Optimizer.h"

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

struct RecipeEntry {
  std::function<int(train::Config &)> run;
  std::string summary;
};
/// Name → recipe, in the order `attn-train --help` lists them.
const std::map<std::string, RecipeEntry> &allRecipes();

} // namespace attn::recipes

#endif // MODELS_RECIPES_RECIPES_H
