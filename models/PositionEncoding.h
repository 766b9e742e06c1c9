// Position encodings computed on the fly: rotary (RoPE) for q/k and sinusoidal absolute.
#ifndef MODELS_POSITIONENCODING_H
#define MODELS_POSITIONENCODING_H

#include <ATen/core/Tensor.h>

namespace attn::models {

/// RoPE (Su et al.), rotate-half form: x [B, H, S, D] (D even) at positions 0 … S−1; pair
/// (x_i, x_{i+D/2}) is rotated by angle pos·base^(−2i/D). Computed in x's dtype.
at::Tensor apply_rotary_embedding(const at::Tensor &x, double base = 10000.0);

/// [length, dim] sinusoidal table (Vaswani et al.): sin on even, cos on odd channels.
at::Tensor sinusoidal_position_encoding(int64_t length, int64_t dim,
                                        const at::TensorOptions &options);

} // namespace attn::models

#endif // MODELS_POSITIONENCODING_H
