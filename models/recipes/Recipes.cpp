#include "models/recipes/Recipes.h"

namespace attn::recipes {

bool isSigmoidAttention(const train::CommonOptions &common) {
  const std::string &name = common.attentionOption;
  return name == "sigmoid" || name.rfind("sigmoid(", 0) == 0;
}

AttentionDefaults attentionDefaults(const train::CommonOptions &common) {
  AttentionDefaults defaults;
  if (isSigmoidAttention(common)) {
    defaults.qkNorm = true;
    defaults.layerScale = 0.1;
  }
  return defaults;
}

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
