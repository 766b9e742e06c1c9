// Mixed precision as torch's autocast: the recipes' --dtype=bfloat16 keeps float32 parameters
// (the optimizer's master weights) and runs the forward under autocast, which casts the inputs of
// matrix products (linear, matmul, conv) to bfloat16. The custom ops (attn::attention,
// attn::reparam_linear) have no autocast kernels, so the modules that call them decide here.
#ifndef MODELS_AUTOCAST_H
#define MODELS_AUTOCAST_H

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/types.h>

#include <optional>

namespace attn::models {

/// The dtype autocast computes products in on `device`'s type, or none when autocast is off.
inline std::optional<at::ScalarType> autocastDtype(const torch::Device &device) {
  if (!at::autocast::is_autocast_enabled(device.type()))
    return std::nullopt;
  return at::autocast::get_autocast_dtype(device.type());
}

/// Within its scope no autocast casts happen (every autocast dispatch key excluded), as inside
/// torch's own autocast kernels: a custom op then sees exactly the dtypes it was given.
class AutocastExcluded {
public:
  AutocastExcluded()
      : guard_(c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA})) {}

private:
  c10::impl::ExcludeDispatchKeyGuard guard_;
};

} // namespace attn::models

#endif // MODELS_AUTOCAST_H
