// A CTC speech recogniser: log-mel front-end, two stride-2 conv layers (4× subsampling in
// time), a transformer encoder on the compiled attention, and a character CTC head.
#ifndef MODELS_SPEECHTRANSFORMER_H
#define MODELS_SPEECHTRANSFORMER_H

#include "models/CharacterVocabulary.h"
#include "models/LogMel.h"
#include "models/TransformerBlock.h"

#include <torch/nn/modules/conv.h>

namespace attn::models {

struct SpeechTransformerOptions {
  explicit SpeechTransformerOptions(int64_t vocab_size = CharacterVocabulary::kSize);

  /// The encoder these options describe.
  TransformerEncoderOptions encoder() const;

  TORCH_ARG(LogMelOptions, front_end);
  /// Channels of both subsampling convs (3×3, stride 2, no padding, ReLU).
  TORCH_ARG(int64_t, subsampling_channels) = 64;
  /// CTC classes including the blank (index 0).
  TORCH_ARG(int64_t, vocab_size);
  TORCH_ARG(int64_t, embed_dim) = 256;
  TORCH_ARG(int64_t, depth) = 6;
  TORCH_ARG(int64_t, num_heads) = 4;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Sinusoidal absolute positions added after subsampling (attention().rope() is the
  /// alternative).
  TORCH_ARG(bool, sinusoidal_positions) = true;
  /// As in VisionTransformerOptions: embed_dim and num_heads here are ignored.
  TORCH_ARG(AttentionOptions, attention);
  TORCH_ARG(BlockNorm, norm) = BlockNorm::PreNorm;
  TORCH_ARG(double, layer_scale_init) = 0.0;
  /// σReparam for every linear (attention, MLP, input projection, CTC head).
  TORCH_ARG(bool, sigma_reparam) = false;

};

struct SpeechOutput {
  /// [T', B, vocab_size] log-softmax, time-major as torch::nn::functional::ctc_loss takes it.
  torch::Tensor log_probs;
  /// [B] int64 valid frames of each utterance after subsampling.
  torch::Tensor output_lengths;
};

class SpeechTransformerImpl : public torch::nn::Cloneable<SpeechTransformerImpl> {
public:
  explicit SpeechTransformerImpl(SpeechTransformerOptions options = SpeechTransformerOptions());
  void reset() override;

  /// waveforms [B, T] 16 kHz, zero-padded; lengths [B] samples (integer). Each utterance
  /// attends only to its own frames (key padding), so padding never changes its output.
  SpeechOutput forward(const torch::Tensor &waveforms, const torch::Tensor &lengths);
  /// Frames after subsampling for `frames` log-mel frames: two (n − 3) / 2 + 1 steps.
  static torch::Tensor subsampled_lengths(const torch::Tensor &frames);
  torch::Tensor attention_entropy() const { return encoder->attention_entropy(); }

  SpeechTransformerOptions options;
  LogMel front_end{nullptr};
  torch::nn::Conv2d subsample1{nullptr}, subsample2{nullptr};
  Projection input_projection{nullptr};
  TransformerEncoder encoder{nullptr};
  Projection head{nullptr};
};
TORCH_MODULE(SpeechTransformer);

} // namespace attn::models

#endif // MODELS_SPEECHTRANSFORMER_H
