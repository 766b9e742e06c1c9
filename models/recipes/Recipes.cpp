#include "models/recipes/Recipes.h"

namespace attn::recipes {

const std::map<std::string, RecipeEntry> &allRecipes() {
  static const std::map<std::string, RecipeEntry> recipes = {
      {"vit-supervised", {runVitSupervised, "ViT classification with cross-entropy"}},
      {"simclr", {runSimclr, "SimCLR: two augmented views, NT-Xent"}},
      {"polyview", {runPolyview, "poly-view contrastive (M views; geometric/arithmetic one-vs-rest, or multi-crop)"}},
      {"byol", {runByol, "BYOL with an EMA target; --ema-scaling-rule for batch-size changes"}},
      {"mp3", {runMp3, "position-prediction pretraining without positions, then fine-tuning with them"}},
      {"distill", {runDistill, "knowledge distillation from a teacher checkpoint (τ, λ)"}},
      {"asr-ctc", {runAsrCtc, "speech transformer with CTC; greedy decoding, CER/WER"}},
  };
  return recipes;
}

} // namespace attn::recipes
