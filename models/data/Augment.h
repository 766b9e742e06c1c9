// SSL augmentations as batched torch ops on images [B, C, H, W] in [0, 1]: every sample draws its
// own parameters from the default CPU generator (so a run's seed and saved RNG state fix them).
#ifndef MODELS_DATA_AUGMENT_H
#define MODELS_DATA_AUGMENT_H

#include <torch/torch.h>

namespace attn::data {

/// Crops a random region of area fraction in [scaleMin, scaleMax] and aspect ratio in
/// [3/4, 4/3], resized to size × size (bilinear); with `flip`, mirrors half the samples too.
torch::Tensor randomResizedCrop(const torch::Tensor &images, int64_t size, double scaleMin,
                                double scaleMax, bool flip);
/// Mirrors each sample left-right with probability p.
torch::Tensor randomHorizontalFlip(const torch::Tensor &images, double p);
/// With probability p per sample: brightness, contrast and saturation factors drawn from
/// [1 − s, 1 + s] for their strengths s (saturation is a no-op on 1 channel).
torch::Tensor colourJitter(const torch::Tensor &images, double brightness, double contrast,
                           double saturation, double p);
/// With probability p per sample: Gaussian blur (5-tap, separable) with σ in [0.1, sigmaMax].
torch::Tensor gaussianBlur(const torch::Tensor &images, double sigmaMax, double p);
/// RandAugment-style: `numOps` rounds, each applying to every sample one operation drawn from
/// {identity, rotate, shear x/y, translate x/y, autocontrast, solarize, posterize, brightness,
/// contrast} at `magnitude` in [0, 10].
torch::Tensor randAugment(const torch::Tensor &images, int64_t numOps, double magnitude);

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
torch::Tensor sslView(const torch::Tensor &images, const ViewOptions &options);

} // namespace attn::data

#endif // MODELS_DATA_AUGMENT_H
