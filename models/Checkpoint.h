// Checkpoints with torch::save/load archives: every parameter and buffer (σReparam's u and γ
// included), the model's configuration, so that a fresh model can be built from the file alone,
// and free-form metadata (epoch, recipe, metrics, ...).
#ifndef MODELS_CHECKPOINT_H
#define MODELS_CHECKPOINT_H

#include "models/SpeechTransformer.h"
#include "models/VisionTransformer.h"

#include <map>
#include <string>

namespace attn::models {

using CheckpointMeta = std::map<std::string, std::string>;

/// Writes the model, its options and `meta` to `path`. Throws c10::Error on I/O failure.
void save_checkpoint(const VisionTransformer &model, const std::string &path,
                     const CheckpointMeta &meta = {});
void save_checkpoint(const SpeechTransformer &model, const std::string &path,
                     const CheckpointMeta &meta = {});
/// Any module: parameters and buffers only; load it with load_checkpoint(module, ...).
void save_checkpoint(const torch::nn::Module &module, const std::string &path,
                     const CheckpointMeta &meta = {});

/// "vision_transformer", "speech_transformer" or "module".
std::string checkpoint_kind(const std::string &path);
/// Builds a fresh model from the checkpoint's options and loads its state; `meta` receives the
/// metadata when given. Throws c10::Error if the file holds another kind of model.
VisionTransformer load_vision_transformer(const std::string &path, CheckpointMeta *meta = nullptr);
SpeechTransformer load_speech_transformer(const std::string &path, CheckpointMeta *meta = nullptr);
/// Loads parameters and buffers into an existing module of the same structure (any kind of
/// checkpoint). σReparam layers must match: convert before loading a σReparam checkpoint.
void load_checkpoint(torch::nn::Module &module, const std::string &path,
                     CheckpointMeta *meta = nullptr);

/// The options as key → text (also what checkpoints store); parse_* inverts them.
std::map<std::string, std::string> to_config(const VisionTransformerOptions &options);
std::map<std::string, std::string> to_config(const SpeechTransformerOptions &options);
VisionTransformerOptions parse_vision_transformer_config(
    const std::map<std::string, std::string> &config);
SpeechTransformerOptions parse_speech_transformer_config(
    const std::map<std::string, std::string> &config);

} // namespace attn::models

#endif // MODELS_CHECKPOINT_H
