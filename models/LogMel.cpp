#include "models/LogMel.h"

#include <ATen/ATen.h>

#include <cmath>

namespace attn::models {
namespace {

double hertzToMel(double hertz) { return 2595.0 * std::log10(1.0 + hertz / 700.0); }

constexpr double kLogFloor = 1e-6;
constexpr double kVarianceFloor = 1e-5;

} // namespace

torch::Tensor mel_filterbank(int64_t sample_rate, int64_t n_fft, int64_t n_mels, double f_min,
                             double f_max) {
  TORCH_CHECK(sample_rate > 0 && n_fft > 1 && n_mels > 0,
              "mel_filterbank: sample_rate, n_fft and n_mels must be positive");
  TORCH_CHECK(0.0 <= f_min && f_min < f_max && f_max <= sample_rate / 2.0,
              "mel_filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got f_min = ", f_min,
              ", f_max = ", f_max);
  const int64_t bins = n_fft / 2 + 1;
  const at::Tensor binHertz =
      at::arange(bins, at::kDouble) * (static_cast<double>(sample_rate) / n_fft);
  // n_mels triangles between n_mels + 2 points equally spaced on the mel scale.
  const at::Tensor points =
      at::linspace(hertzToMel(f_min), hertzToMel(f_max), n_mels + 2, at::kDouble);
  const at::Tensor hertz = 700.0 * (at::pow(10.0, points / 2595.0) - 1.0);
  const at::Tensor lower = hertz.narrow(0, 0, n_mels).unsqueeze(1);
  const at::Tensor center = hertz.narrow(0, 1, n_mels).unsqueeze(1);
  const at::Tensor upper = hertz.narrow(0, 2, n_mels).unsqueeze(1);
  const at::Tensor rising = (binHertz.unsqueeze(0) - lower) / (center - lower);
  const at::Tensor falling = (upper - binHertz.unsqueeze(0)) / (upper - center);
  return at::clamp_min(at::minimum(rising, falling), 0.0).to(at::kFloat);
}

LogMelImpl::LogMelImpl(LogMelOptions options_) : options(std::move(options_)) { reset(); }

void LogMelImpl::reset() {
  TORCH_CHECK(options.hop_length() > 0 && options.n_fft() > 1,
              "LogMel: n_fft and hop_length must be positive");
  const double fMax = options.f_max() > 0 ? options.f_max() : options.sample_rate() / 2.0;
  window = register_buffer("window", at::hann_window(options.n_fft(), at::kFloat));
  filterbank = register_buffer("filterbank",
                               mel_filterbank(options.sample_rate(), options.n_fft(),
                                              options.n_mels(), options.f_min(), fMax));
}

int64_t LogMelImpl::frames_for(int64_t samples) const {
  return 1 + samples / options.hop_length();
}

LogMelOutput LogMelImpl::forward(const torch::Tensor &waveforms, const torch::Tensor &lengths) {
  TORCH_CHECK(waveforms.dim() == 2 && at::isFloatingType(waveforms.scalar_type()),
              "LogMel: waveforms must be floating [B, T], got ", waveforms.scalar_type(), " ",
              waveforms.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == waveforms.size(0) &&
                  !at::isFloatingType(lengths.scalar_type()),
              "LogMel: lengths must be an integer tensor [", waveforms.size(0), "], got ",
              lengths.scalar_type(), " ", lengths.sizes());
  const int64_t samples = waveforms.size(1);
  const at::Tensor sampleLengths = lengths.to(waveforms.device(), at::kLong);
  TORCH_CHECK(sampleLengths.numel() == 0 ||
                  (sampleLengths.min().item<int64_t>() >= 0 &&
                   sampleLengths.max().item<int64_t>() <= samples),
              "LogMel: lengths must lie in [0, ", samples, "]");

  // Zero beyond each utterance and pad with zeros (not reflection): a frame then sees the same
  // samples whether its utterance is alone or padded in a batch.
  const at::Tensor valid = at::arange(samples, sampleLengths.options()).unsqueeze(0) <
                           sampleLengths.unsqueeze(1);
  const at::Tensor signal = waveforms.to(at::kFloat) * valid;
  const at::Tensor spectrum =
      at::stft(signal, options.n_fft(), options.hop_length(), options.n_fft(), window,
               /*center=*/true, "constant", /*normalized=*/false, /*onesided=*/true,
               /*return_complex=*/true);
  const at::Tensor power = at::view_as_real(spectrum).pow(2).sum(-1); // [B, bins, frames]
  at::Tensor features = at::log(at::matmul(filterbank, power) + kLogFloor).transpose(1, 2);

  const at::Tensor frameLengths = sampleLengths.div(options.hop_length(), "floor") + 1;
  const at::Tensor frameMask =
      (at::arange(features.size(1), frameLengths.options()).unsqueeze(0) <
       frameLengths.unsqueeze(1))
          .unsqueeze(2)
          .to(features.scalar_type());
  if (options.normalize()) {
    const at::Tensor count = frameMask.sum(1, /*keepdim=*/true).clamp_min(1.0);
    const at::Tensor mean = (features * frameMask).sum(1, true) / count;
    const at::Tensor variance = ((features - mean).pow(2) * frameMask).sum(1, true) / count;
    features = (features - mean) / at::sqrt(variance + kVarianceFloor);
  }
  return {features * frameMask, frameLengths};
}

} // namespace attn::models
