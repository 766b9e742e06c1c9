// SSL augmentations as batched torch ops on images [B, C, H, W] in [0, 1]: every sample draws its
// own parameters, from the default CPU generator (so a run's seed and saved RNG state fix them)
// or from a SampleRandom made for one step of a data-parallel run.
#ifndef MODELS_DATA_AUGMENT_H
#define MODELS_DATA_AUGMENT_H

#include <torch/torch.h>

#include <optional>

namespace attn::data {

/// Where the per-sample random parameters of a batch come from. Default: the default CPU
/// generator, for the batch at hand. forStep: a generator of its own, seeded from (seed, step),
/// that draws the parameters of the whole global batch, of which this process keeps the rows
/// [offset, offset + n): W ranks each holding a contiguous slice of the global batch draw
/// exactly what one process draws for the same samples, and no two ranks share draws. The
/// draws are a pure function of (seed, step), so resuming needs no saved generator state.
/// Copies share the generator (its state advances with every draw).
class SampleRandom {
public:
  SampleRandom() = default;
  static SampleRandom forStep(uint64_t seed, int64_t step, int64_t globalBatch, int64_t offset);

  /// [n, shape...] uniform in [0, 1), dtype and device of `like`.
  torch::Tensor rand(int64_t n, const torch::Tensor &like, torch::IntArrayRef shape = {});
  /// [n] uniform in [low, high).
  torch::Tensor uniform(int64_t n, double low, double high, const torch::Tensor &like);
  /// [n] int64 uniform in [0, high), on `like`'s device.
  torch::Tensor randint(int64_t high, int64_t n, const torch::Tensor &like);

private:
  /// The rows of this process from a draw over the global batch.
  torch::Tensor slice(const torch::Tensor &global, int64_t n, const torch::Tensor &like) const;

  std::optional<at::Generator> generator_;
  int64_t globalBatch_ = 0, offset_ = 0;
};

/// Crops a random region of area fraction in [scaleMin, scaleMax] and aspect ratio in
/// [3/4, 4/3], resized to size × size (bilinear); with `flip`, mirrors half the samples too.
torch::Tensor randomResizedCrop(const torch::Tensor &images, int64_t size, double scaleMin,
                                double scaleMax, bool flip, SampleRandom random = {});
/// Mirrors each sample left-right with probability p.
torch::Tensor randomHorizontalFlip(const torch::Tensor &images, double p, SampleRandom random = {});
/// With probability p per sample: brightness, contrast and saturation factors drawn from
/// [1 − s, 1 + s] for their strengths s (saturation is a no-op on 1 channel).
torch::Tensor colourJitter(const torch::Tensor &images, double brightness, double contrast,
                           double saturation, double p, SampleRandom random = {});
/// With probability p per sample: Gaussian blur (5-tap, separable) with σ in [0.1, sigmaMax].
torch::Tensor gaussianBlur(const torch::Tensor &images, double sigmaMax, double p,
                           SampleRandom random = {});
/// RandAugment-style: `numOps` rounds, each applying to every sample one operation drawn from
/// {identity, rotate, shear x/y, translate x/y, autocontrast, solarize, posterize, brightness,
/// contrast} at `magnitude` in [0, 10].
torch::Tensor randAugment(const torch::Tensor &images, int64_t numOps, double magnitude,
                          SampleRandom random = {});

struct ViewOptions {
  int64_t size = 28;
  double cropScaleMin = 0.25, cropScaleMax = 1.0;
  bool flip = true;
  double jitterStrength = 0.4, jitterProbability = 0.8;
  double blurSigmaMax = 1.0, blurProbability = 0.5;
  int64_t randAugmentOps = 0; ///< 0 = off
  double randAugmentMagnitude = 9;
};
/// One SSL view: crop (+flip) → jitter → blur → optional RandAugment.
torch::Tensor sslView(const torch::Tensor &images, const ViewOptions &options,
                      SampleRandom random = {});

/// SpecAugment-style time masks on waveforms [B, T] with valid lengths [B]: `count` rounds, each
/// zeroing per utterance a span starting uniformly inside its valid length, of width uniform in
/// [0, maxWidth) samples.
torch::Tensor randomTimeMasks(const torch::Tensor &waveforms, const torch::Tensor &lengths,
                              int64_t count, int64_t maxWidth, SampleRandom random = {});

} // namespace attn::data

#endif // MODELS_DATA_AUGMENT_H
