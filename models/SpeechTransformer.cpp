#include "models/SpeechTransformer.h"

#include "models/PositionEncoding.h"

#include <torch/nn/functional/activation.h>

namespace attn::models {

SpeechTransformerOptions::SpeechTransformerOptions(int64_t vocab_size) : vocab_size_(vocab_size) {}

TransformerEncoderOptions SpeechTransformerOptions::encoder() const {
  return encoderOptionsOf(*this);
}

SpeechTransformerImpl::SpeechTransformerImpl(SpeechTransformerOptions options_)
    : options(std::move(options_)) {
  reset();
}

namespace {
/// One 3-wide, stride-2, unpadded conv step.
int64_t subsampledOnce(int64_t size) { return (size - 3) / 2 + 1; }
} // namespace

void SpeechTransformerImpl::reset() {
  const int64_t channels = options.subsampling_channels(), mels = options.front_end().n_mels();
  TORCH_CHECK(channels > 0, "SpeechTransformer: subsampling_channels must be positive");
  TORCH_CHECK(mels >= 7, "SpeechTransformer: n_mels must be >= 7 for two stride-2 convs, got ",
              mels);
  TORCH_CHECK(options.vocab_size() > 1, "SpeechTransformer: vocab_size must exceed 1 (blank + "
                                        "symbols), got ", options.vocab_size());
  TORCH_CHECK(!options.sinusoidal_positions() || options.embed_dim() % 2 == 0,
              "SpeechTransformer: sinusoidal positions need an even embed_dim");
  front_end = register_module("front_end", LogMel(options.front_end()));
  subsample1 = register_module(
      "subsample1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, channels, 3).stride(2)));
  subsample2 = register_module(
      "subsample2", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2)));
  const int64_t melsAfter = subsampledOnce(subsampledOnce(mels));
  input_projection = register_module(
      "input_projection", Projection(ProjectionOptions(channels * melsAfter, options.embed_dim())
                                         .sigma_reparam(options.sigma_reparam())));
  encoder = register_module("encoder", TransformerEncoder(options.encoder()));
  head = register_module("head", Projection(ProjectionOptions(options.embed_dim(),
                                                              options.vocab_size())
                                                .sigma_reparam(options.sigma_reparam())));
}

torch::Tensor SpeechTransformerImpl::subsampled_lengths(const torch::Tensor &frames) {
  auto once = [](const torch::Tensor &n) { return (n - 3).div(2, "floor") + 1; };
  return once(once(frames)).clamp_min(0);
}

SpeechOutput SpeechTransformerImpl::forward(const torch::Tensor &waveforms,
                                            const torch::Tensor &lengths) {
  const LogMelOutput mel = front_end->forward(waveforms, lengths);
  const torch::Tensor outputLengths = subsampled_lengths(mel.frame_lengths);
  TORCH_CHECK(outputLengths.numel() == 0 || outputLengths.min().item<int64_t>() >= 1,
              "SpeechTransformer: every utterance needs at least 7 log-mel frames (",
              6 * options.front_end().hop_length(), " samples); got lengths ", lengths);

  namespace F = torch::nn::functional;
  torch::Tensor x = F::relu(subsample1->forward(mel.features.unsqueeze(1)));
  x = F::relu(subsample2->forward(x)); // [B, C, T', M']
  const int64_t batch = x.size(0), frames = x.size(2);
  x = input_projection->forward(x.permute({0, 2, 1, 3}).reshape({batch, frames, -1}));
  if (options.sinusoidal_positions())
    x = x + sinusoidal_position_encoding(frames, options.embed_dim(), x.options());
  x = encoder->forward(x, outputLengths);
  const torch::Tensor logProbs = F::log_softmax(head->forward(x), F::LogSoftmaxFuncOptions(-1));
  return {logProbs.transpose(0, 1), outputLengths};
}

} // namespace attn::models
