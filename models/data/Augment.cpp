#include "models/data/Augment.h"

#include <cmath>

namespace attn::data {
namespace F = torch::nn::functional;

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

} // namespace

SampleRandom SampleRandom::forStep(uint64_t seed, int64_t step, int64_t globalBatch, int64_t offset) {
  TORCH_CHECK(globalBatch > 0 && offset >= 0 && offset < globalBatch,
              "SampleRandom: offset ", offset, " outside the global batch of ", globalBatch);
  SampleRandom random;
  // A stream of its own (not the sampler's seed·1000003 + epoch, not the default generator's).
  uint64_t key = splitmix64(splitmix64(seed ^ 0x61756D656E740000ULL /* "augment" */) ^ uint64_t(step));
  random.generator_ = at::make_generator<at::CPUGeneratorImpl>(key);
  random.globalBatch_ = globalBatch;
  random.offset_ = offset;
  return random;
}

torch::Tensor SampleRandom::slice(const torch::Tensor &global, int64_t n, const torch::Tensor &like) const {
  TORCH_CHECK(offset_ + n <= globalBatch_, "SampleRandom: rows [", offset_, ", ", offset_ + n,
              ") outside the global batch of ", globalBatch_);
  return global.slice(0, offset_, offset_ + n).to(like.device());
}

torch::Tensor SampleRandom::rand(int64_t n, const torch::Tensor &like, torch::IntArrayRef shape) {
  std::vector<int64_t> sizes{n};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  if (!generator_)
    return torch::rand(sizes, like.options());
  sizes[0] = globalBatch_;
  auto global = torch::rand(sizes, *generator_, like.options().device(torch::kCPU));
  return slice(global, n, like);
}

torch::Tensor SampleRandom::uniform(int64_t n, double low, double high, const torch::Tensor &like) {
  return rand(n, like) * (high - low) + low;
}

torch::Tensor SampleRandom::randint(int64_t high, int64_t n, const torch::Tensor &like) {
  auto options = like.options().dtype(torch::kInt64);
  if (!generator_)
    return torch::randint(0, high, {n}, options);
  auto global = torch::randint(0, high, {globalBatch_}, *generator_, options.device(torch::kCPU));
  return slice(global, n, like);
}

namespace {

torch::Tensor bernoulliMask(int64_t n, double p, const torch::Tensor &like, SampleRandom &random) {
  return random.rand(n, like) < p;
}

/// Resamples each sample through its own 2×3 affine map of normalised output → input coords.
torch::Tensor warp(const torch::Tensor &images, const torch::Tensor &theta, int64_t height,
                   int64_t width) {
  auto grid = F::affine_grid(theta, {images.size(0), images.size(1), height, width},
                             /*align_corners=*/false);
  return F::grid_sample(images, grid,
                        F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
}

/// [B, 1, 1, 1] broadcastable factor.
torch::Tensor perSample(const torch::Tensor &values) { return values.view({-1, 1, 1, 1}); }

torch::Tensor grayscale(const torch::Tensor &images) {
  if (images.size(1) == 1)
    return images;
  auto weights = torch::tensor({0.299, 0.587, 0.114}, images.options()).view({1, 3, 1, 1});
  return (images * weights).sum(1, true);
}

} // namespace

torch::Tensor randomResizedCrop(const torch::Tensor &images, int64_t size, double scaleMin,
                                double scaleMax, bool flip, SampleRandom random) {
  int64_t b = images.size(0);
  auto area = random.uniform(b, scaleMin, scaleMax, images);
  auto logRatio = random.uniform(b, std::log(3.0 / 4.0), std::log(4.0 / 3.0), images);
  auto ratio = logRatio.exp();
  // Width and height as fractions of the image, clipped to fit.
  auto w = (area * ratio).sqrt().clamp_max(1.0), h = (area / ratio).sqrt().clamp_max(1.0);
  auto cx = (random.rand(b, images) * 2 - 1) * (1 - w);
  auto cy = (random.rand(b, images) * 2 - 1) * (1 - h);
  auto sx = w;
  if (flip)
    sx = torch::where(bernoulliMask(b, 0.5, images, random), -w, w);
  auto zeros = torch::zeros_like(w);
  auto theta = torch::stack({torch::stack({sx, zeros, cx}, 1), torch::stack({zeros, h, cy}, 1)}, 1);
  return warp(images, theta, size, size);
}

torch::Tensor randomHorizontalFlip(const torch::Tensor &images, double p, SampleRandom random) {
  auto mask = perSample(bernoulliMask(images.size(0), p, images, random));
  return torch::where(mask, images.flip({3}), images);
}

torch::Tensor colourJitter(const torch::Tensor &images, double brightness, double contrast,
                           double saturation, double p, SampleRandom random) {
  int64_t b = images.size(0);
  auto apply = bernoulliMask(b, p, images, random);
  auto factor = [&](double strength) {
    auto f = random.uniform(b, 1 - strength, 1 + strength, images);
    return perSample(torch::where(apply, f, torch::ones_like(f)));
  };
  auto out = images * factor(brightness);
  auto mean = grayscale(out).mean({1, 2, 3}, true);
  out = (out - mean) * factor(contrast) + mean;
  if (images.size(1) == 3) {
    auto gray = grayscale(out);
    out = (out - gray) * factor(saturation) + gray;
  }
  return out.clamp(0, 1);
}

torch::Tensor gaussianBlur(const torch::Tensor &images, double sigmaMax, double p,
                           SampleRandom random) {
  int64_t b = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  auto sigma = random.uniform(b, 0.1, std::max(0.1, sigmaMax), images).view({b, 1});
  auto taps = torch::arange(-2, 3, images.options()).view({1, 5});
  auto kernel = torch::exp(-(taps * taps) / (2 * sigma * sigma));
  kernel = kernel / kernel.sum(1, true);                            // [B, 5]
  kernel = kernel.repeat_interleave(c, 0);                          // [B·C, 5]
  auto x = images.reshape({1, b * c, h, w});
  auto padded = F::pad(x, F::PadFuncOptions({2, 2, 2, 2}).mode(torch::kReflect));
  auto blurred = F::conv2d(padded, kernel.view({b * c, 1, 1, 5}), F::Conv2dFuncOptions().groups(b * c));
  blurred = F::conv2d(blurred, kernel.view({b * c, 1, 5, 1}), F::Conv2dFuncOptions().groups(b * c));
  auto mask = perSample(bernoulliMask(b, p, images, random));
  return torch::where(mask, blurred.view({b, c, h, w}), images);
}

torch::Tensor randAugment(const torch::Tensor &images, int64_t numOps, double magnitude,
                          SampleRandom random) {
  constexpr int64_t kOps = 11;
  double m = std::clamp(magnitude, 0.0, 10.0) / 10.0;
  int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  auto out = images;
  for (int64_t round = 0; round < numOps; ++round) {
    auto op = random.randint(kOps, b, images);
    auto sign = torch::where(bernoulliMask(b, 0.5, images, random), 1.0, -1.0).to(images.dtype());
    auto is = [&](int64_t id) { return op == id; };

    // Geometric ops share one warp: identity map unless the sample drew one of them.
    auto zero = torch::zeros({b}, images.options()), one = torch::ones({b}, images.options());
    auto angle = torch::where(is(1), sign * (M_PI / 6) * m, zero); // up to 30°
    auto shearX = torch::where(is(2), sign * 0.3 * m, zero);
    auto shearY = torch::where(is(3), sign * 0.3 * m, zero);
    auto shiftX = torch::where(is(4), sign * 0.9 * m * 0.5, zero); // normalised coords span 2
    auto shiftY = torch::where(is(5), sign * 0.9 * m * 0.5, zero);
    auto cosA = angle.cos(), sinA = angle.sin();
    auto theta = torch::stack({torch::stack({cosA, -sinA + shearX, shiftX}, 1),
                               torch::stack({sinA + shearY, cosA, shiftY}, 1)},
                              1);
    auto geometric = warp(out, theta, h, w);

    auto low = out.amin({1, 2, 3}, true), high = out.amax({1, 2, 3}, true);
    auto autocontrast = (out - low) / (high - low).clamp_min(1e-3);
    auto solarize = torch::where(out >= 1.0 - m, 1.0 - out, out);
    double levels = std::pow(2.0, 8 - std::round(4 * m));
    auto posterize = torch::floor(out * (levels - 1) + 0.5) / (levels - 1);
    auto brightness = (out * perSample(1 + sign * 0.9 * m)).clamp(0, 1);
    auto mean = out.mean({1, 2, 3}, true);
    auto contrast = ((out - mean) * perSample(1 + sign * 0.9 * m) + mean).clamp(0, 1);

    auto choose = [&](int64_t id, const torch::Tensor &candidate, const torch::Tensor &base) {
      return torch::where(perSample(is(id)), candidate, base);
    };
    auto next = torch::where(perSample(op >= 1).logical_and(perSample(op <= 5)), geometric, out);
    next = choose(6, autocontrast, next);
    next = choose(7, solarize, next);
    next = choose(8, posterize, next);
    next = choose(9, brightness, next);
    next = choose(10, contrast, next);
    out = next;
  }
  return out.clamp(0, 1);
}

torch::Tensor sslView(const torch::Tensor &images, const ViewOptions &options, SampleRandom random) {
  auto view = randomResizedCrop(images, options.size, options.cropScaleMin, options.cropScaleMax,
                                options.flip, random);
  if (options.jitterProbability > 0)
    view = colourJitter(view, options.jitterStrength, options.jitterStrength,
                        options.jitterStrength, options.jitterProbability, random);
  if (options.blurProbability > 0)
    view = gaussianBlur(view, options.blurSigmaMax, options.blurProbability, random);
  if (options.randAugmentOps > 0)
    view = randAugment(view, options.randAugmentOps, options.randAugmentMagnitude, random);
  return view;
}

torch::Tensor randomTimeMasks(const torch::Tensor &waveforms, const torch::Tensor &lengths,
                              int64_t count, int64_t maxWidth, SampleRandom random) {
  TORCH_CHECK(waveforms.dim() == 2 && lengths.dim() == 1 && lengths.size(0) == waveforms.size(0),
              "randomTimeMasks: waveforms [B, T] and lengths [B] expected, got ", waveforms.sizes(),
              " and ", lengths.sizes());
  int64_t b = waveforms.size(0);
  auto out = waveforms;
  auto t = torch::arange(waveforms.size(1), lengths.options().dtype(torch::kInt64)).unsqueeze(0);
  auto valid = lengths.to(torch::kFloat32);
  auto like = torch::zeros({1}, waveforms.options().dtype(torch::kFloat32));
  for (int64_t m = 0; m < count; ++m) {
    auto start = (random.rand(b, like).to(valid.device()) * valid).to(torch::kInt64);
    auto width = random.randint(std::max<int64_t>(1, maxWidth), b, like).to(valid.device());
    out = out.masked_fill((t >= start.unsqueeze(1)) & (t < (start + width).unsqueeze(1)), 0.0);
  }
  return out;
}

} // namespace attn::data
