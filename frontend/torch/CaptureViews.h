// A call's captured tensors as the kernels of either device take them: each converted to the
// element type its variant's IR declares (f32, i32, i64) and made contiguous, on its own device.
// Shared by the CPU (CpuAttention.cpp) and CUDA (CudaAttention.cpp) paths.
#ifndef FRONTEND_TORCH_CAPTUREVIEWS_H
#define FRONTEND_TORCH_CAPTUREVIEWS_H

#include "runtime/CpuKernels.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

namespace attn::torchop {

inline at::ScalarType captureDtype(runtime::CaptureElement element) {
  switch (element) {
  case runtime::CaptureElement::Float32:
    return at::kFloat;
  case runtime::CaptureElement::Int32:
    return at::kInt;
  case runtime::CaptureElement::Int64:
    return at::kLong;
  }
  return at::kFloat;
}

/// Views of `captures` for kernels whose variant declares `declared`: the converted, contiguous
/// tensors are appended to `storage`, which keeps them alive. Checks the count (c10::Error); the
/// sizes are the runtime's to check against the IR (CallError).
inline std::vector<runtime::CaptureView>
captureViews(const std::vector<runtime::CaptureDeclaration> &declared, at::TensorList captures,
             std::vector<at::Tensor> &storage) {
  TORCH_CHECK(declared.size() == captures.size(), "attn::attention: the variant reads ",
              declared.size(), " captured tensors, the call passes ", captures.size());
  std::vector<runtime::CaptureView> views;
  for (size_t i = 0; i < captures.size(); ++i) {
    storage.push_back(captures[i].to(captureDtype(declared[i].element)).contiguous());
    runtime::CaptureView view;
    view.data = storage.back().data_ptr();
    view.sizes.assign(storage.back().sizes().begin(), storage.back().sizes().end());
    views.push_back(std::move(view));
  }
  return views;
}

} // namespace attn::torchop

#endif // FRONTEND_TORCH_CAPTUREVIEWS_H
