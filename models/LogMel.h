// Log-mel features from 16 kHz audio with torch ops only: STFT (Hann window) → power → mel
// filterbank (HTK mel scale, built in code) → log → per-utterance mean/variance normalisation.
#ifndef MODELS_LOGMEL_H
#define MODELS_LOGMEL_H

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/arg.h>

namespace attn::models {

struct LogMelOptions {
  TORCH_ARG(int64_t, sample_rate) = 16000;
  /// 25 ms window, 10 ms hop at 16 kHz.
  TORCH_ARG(int64_t, n_fft) = 400;
  TORCH_ARG(int64_t, hop_length) = 160;
  TORCH_ARG(int64_t, n_mels) = 80;
  TORCH_ARG(double, f_min) = 0.0;
  /// 0 means sample_rate / 2.
  TORCH_ARG(double, f_max) = 0.0;
  /// Normalise each mel bin to zero mean, unit variance over an utterance's valid frames.
  TORCH_ARG(bool, normalize) = true;
};

struct LogMelOutput {
  torch::Tensor features;      ///< [B, frames, n_mels], zero beyond each utterance's frames
  torch::Tensor frame_lengths; ///< [B] int64: 1 + samples / hop_length
};

class LogMelImpl : public torch::nn::Cloneable<LogMelImpl> {
public:
  explicit LogMelImpl(LogMelOptions options = {});
  void reset() override;

  /// waveforms [B, T] (zero-padded), lengths [B] samples per utterance.
  LogMelOutput forward(const torch::Tensor &waveforms, const torch::Tensor &lengths);

  /// Frames of an utterance of `samples` samples (centered STFT).
  int64_t frames_for(int64_t samples) const;

  LogMelOptions options;
  /// Buffers: Hann window [n_fft]; filterbank [n_mels, n_fft/2 + 1].
  torch::Tensor window, filterbank;
};
TORCH_MODULE(LogMel);

/// The triangular HTK-mel filterbank [n_mels, n_fft/2 + 1] (float32), rows peak at 1.
torch::Tensor mel_filterbank(int64_t sample_rate, int64_t n_fft, int64_t n_mels, double f_min,
                             double f_max);

} // namespace attn::models

#endif // MODELS_LOGMEL_H
