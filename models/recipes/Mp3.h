// MP3's position-prediction forward (Zhai et al., "Position Prediction as an Effective
// Pretraining Strategy", ICML 2022), separate from the recipe so that tests can call it.
#ifndef MODELS_RECIPES_MP3_H
#define MODELS_RECIPES_MP3_H

#include "models/Projection.h"
#include "models/VisionTransformer.h"
#include "models/data/Augment.h"

namespace attn::recipes {

/// A random patch order per sample: [B, P] int64, each row a permutation of 0..P−1; its first
/// `visible` entries are the context (the visible patches), the rest are masked. The orders come
/// from `random` (training steps: SampleRandom::forStep, one draw for the global batch).
torch::Tensor mp3PatchOrder(int64_t batch, int64_t numPatches, const torch::Device &device,
                            data::SampleRandom random = {});

/// Position logits of every patch: `model` (no position embeddings) embeds the patches of
/// `images`, puts them in the order `order` [B, P] and runs its encoder with key length
/// `visible`, so every patch is a query while only the visible ones (the first `visible` of
/// `order`) are keys and values, in every layer. Returns [B, P, P]: row t of sample b scores the
/// positions of patch order[b][t] (the target of the loss, which covers all P positions).
torch::Tensor mp3PositionLogits(models::VisionTransformer &model, models::Projection &head,
                                const torch::Tensor &images, const torch::Tensor &order,
                                int64_t visible);

} // namespace attn::recipes

#endif // MODELS_RECIPES_MP3_H
