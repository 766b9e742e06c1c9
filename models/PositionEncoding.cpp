#include "models/PositionEncoding.h"

#include <ATen/ATen.h>

#include <cmath>

namespace attn::models {

at::Tensor apply_rotary_embedding(const at::Tensor &x, double base) {
  TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0,
              "apply_rotary_embedding: x must be [B, H, S, D] with D even, got shape ", x.sizes());
  const int64_t length = x.size(2), half = x.size(3) / 2;
  const at::TensorOptions options = x.options().dtype(at::kDouble);
  const at::Tensor inverseFrequency =
      at::pow(base, at::arange(0, half, options) * (-2.0 / static_cast<double>(x.size(3))));
  const at::Tensor angles = at::outer(at::arange(length, options), inverseFrequency);
  const at::Tensor cos = at::cat({angles.cos(), angles.cos()}, -1).to(x.scalar_type());
  const at::Tensor sin = at::cat({angles.sin(), angles.sin()}, -1).to(x.scalar_type());
  const at::Tensor first = x.narrow(3, 0, half), second = x.narrow(3, half, half);
  const at::Tensor rotated = at::cat({-second, first}, -1);
  return x * cos + rotated * sin;
}

at::Tensor sinusoidal_position_encoding(int64_t length, int64_t dim,
                                        const at::TensorOptions &options) {
  TORCH_CHECK(length >= 0 && dim > 0 && dim % 2 == 0,
              "sinusoidal_position_encoding: dim must be positive and even, got ", dim);
  const at::TensorOptions doubles = options.dtype(at::kDouble);
  const at::Tensor positions = at::arange(length, doubles).unsqueeze(1);
  const at::Tensor frequencies =
      at::exp(at::arange(0, dim, 2, doubles) * (-std::log(10000.0) / static_cast<double>(dim)));
  const at::Tensor angles = positions * frequencies;
  // Interleave: channel 2i = sin, 2i+1 = cos.
  return at::stack({angles.sin(), angles.cos()}, -1).reshape({length, dim}).to(options);
}

} // namespace attn::models
