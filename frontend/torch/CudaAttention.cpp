#include "frontend/torch/CudaAttention.h"

#include "frontend/torch/CaptureViews.h"
#include "runtime/CudaDriver.h"
#include "runtime/GpuKernels.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

namespace attn::torchop {
namespace {
at::ScalarType computeType(at::ScalarType input) {
  if (input == at::kBFloat16 || input == at::kHalf)
    return input;
  TORCH_WARN_ONCE("attn::attention on CUDA computes in bfloat16 with float32 accumulators; ", input,
                  " inputs are converted (pass bfloat16 or float16 to avoid the copies)");
  return at::kBFloat16;
}

runtime::GpuDtype gpuDtype(at::ScalarType type) {
  return type == at::kHalf ? runtime::GpuDtype::Float16 : runtime::GpuDtype::BFloat16;
}

std::shared_ptr<const runtime::GpuKernels>
loadKernels(const runtime::VariantSpec &spec, at::ScalarType type, const at::Device &device) {
  try {
    return runtime::getGpuKernels(spec, gpuDtype(type), device.index());
  } catch (const runtime::CompileError &error) {
    TORCH_CHECK(false, "attn::attention (CUDA): ", error.what());
  } catch (const runtime::cuda::CudaError &error) {
    TORCH_CHECK(false, "attn::attention (CUDA): ", error.what());
  }
}

/// Kernels read rows with unit stride and 16-byte alignment: a contiguous copy guarantees both.
at::Tensor toKernelLayout(const at::Tensor &tensor, at::ScalarType type) {
  return tensor.to(type).contiguous();
}

template <int Rank> runtime::DeviceView<Rank> viewOf(const at::Tensor &tensor) {
  TORCH_INTERNAL_ASSERT(tensor.dim() == Rank && tensor.is_contiguous());
  runtime::DeviceView<Rank> view;
  view.data = tensor.data_ptr();
  for (int dim = 0; dim < Rank; ++dim) {
    view.sizes[dim] = tensor.size(dim);
    view.strides[dim] = tensor.stride(dim);
  }
  return view;
}

/// The kernels' view of kv_lengths: contiguous int64 on the device, kept alive by `storage`.
c10::optional<runtime::DeviceLengths> lengthsOf(const c10::optional<at::Tensor> &kvLengths,
                                                at::Tensor &storage) {
  if (!kvLengths)
    return c10::nullopt;
  storage = kvLengths->to(at::kLong).contiguous();
  return viewOf<1>(storage);
}

void *currentStream(const at::Device &device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

/// A call's captures on the device as the kernels take them (converted, contiguous, kept
/// alive by `storage` with the scratch for their fault flags); none when the variant has none.
c10::optional<runtime::DeviceCaptures> deviceCaptures(const runtime::GpuKernels &kernels,
                                                      at::TensorList captures,
                                                      const at::Tensor &q,
                                                      std::vector<at::Tensor> &storage) {
  if (kernels.captures().empty() && captures.empty())
    return c10::nullopt;
  runtime::DeviceCaptures result;
  result.views = captureViews(kernels.captures(), captures, storage);
  // int64 words: 8-byte aligned, as the runtime asks.
  const auto words = static_cast<int64_t>((kernels.captureScratchBytes() + 7) / 8);
  storage.push_back(at::empty({words}, q.options().dtype(at::kLong)));
  result.scratch = words > 0 ? storage.back().data_ptr() : nullptr;
  return result;
}

/// Runs `launch` (the kernels of one call), turning the runtime's errors into c10::Error: a
/// capture that does not fit or that a region read outside of, a failing driver call.
template <typename Launch> void launchChecked(const Launch &launch) {
  try {
    launch();
  } catch (const runtime::CallError &error) {
    TORCH_CHECK(false, "attn::attention (CUDA): ", error.what());
  } catch (const runtime::CompileError &error) {
    TORCH_CHECK(false, "attn::attention (CUDA): ", error.what());
  } catch (const runtime::cuda::CudaError &error) {
    TORCH_CHECK(false, "attn::attention (CUDA): ", error.what());
  }
}
} // namespace

AttentionForward cudaAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                      const at::Tensor &k, const at::Tensor &v,
                                      const c10::optional<at::Tensor> &kvLengths,
                                      at::TensorList captures) {
  c10::cuda::CUDAGuard guard(q.device());
  const at::ScalarType type = computeType(q.scalar_type());
  auto kernels = loadKernels(spec, type, q.device());
  at::Tensor qc = toKernelLayout(q, type), kc = toKernelLayout(k, type),
             vc = toKernelLayout(v, type);
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, qc.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, qc.options().dtype(at::kFloat));
  at::Tensor lengthsStorage;
  const auto lengths = lengthsOf(kvLengths, lengthsStorage);
  std::vector<at::Tensor> captureStorage;
  const auto bound = deviceCaptures(*kernels, captures, q, captureStorage);
  launchChecked([&] {
    kernels->forward(viewOf<4>(qc), viewOf<4>(kc), viewOf<4>(vc), viewOf<4>(out), viewOf<3>(lse),
                     currentStream(q.device()), lengths ? &*lengths : nullptr,
                     bound ? &*bound : nullptr);
  });
  return {out, lse};
}

AttentionGradients cudaAttentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                         const at::Tensor &k, const at::Tensor &v,
                                         const at::Tensor &out, const at::Tensor &lse,
                                         const at::Tensor &gradOut,
                                         const c10::optional<at::Tensor> &kvLengths,
                                         at::TensorList captures) {
  c10::cuda::CUDAGuard guard(q.device());
  const at::ScalarType type = computeType(q.scalar_type());
  auto kernels = loadKernels(spec, type, q.device());
  at::Tensor qc = toKernelLayout(q, type), kc = toKernelLayout(k, type),
             vc = toKernelLayout(v, type), oc = toKernelLayout(out, type),
             gc = toKernelLayout(gradOut, type);
  at::Tensor delta = at::empty_like(lse);
  AttentionGradients grads;
  grads.q = at::empty_like(qc);
  // With key lengths the dK/dV kernel leaves the rows past each batch's length unwritten.
  grads.k = kvLengths ? at::zeros_like(kc) : at::empty_like(kc);
  grads.v = kvLengths ? at::zeros_like(vc) : at::empty_like(vc);
  at::Tensor lengthsStorage;
  const auto lengths = lengthsOf(kvLengths, lengthsStorage);
  std::vector<at::Tensor> captureStorage;
  auto bound = deviceCaptures(*kernels, captures, q, captureStorage);
  if (spec.captureGradients && bound) {
    // Per floating capture a zeroed float32 buffer the dQ kernel adds its gradient into.
    grads.captures.resize(captures.size());
    bound->gradients.resize(captures.size());
    for (size_t i = 0; i < captures.size(); ++i) {
      bound->gradients[i].sizes = captures[i].sizes().vec();
      if (!at::isFloatingType(captures[i].scalar_type()))
        continue;
      grads.captures[i] = at::zeros(captures[i].sizes(), q.options().dtype(at::kFloat));
      bound->gradients[i].data = grads.captures[i].data_ptr<float>();
    }
  }
  const at::Tensor lsec = lse.contiguous();
  launchChecked([&] {
    kernels->backward(viewOf<4>(qc), viewOf<4>(kc), viewOf<4>(vc), viewOf<4>(oc), viewOf<4>(gc),
                      viewOf<3>(lsec), viewOf<3>(delta), viewOf<4>(grads.q), viewOf<4>(grads.k),
                      viewOf<4>(grads.v), currentStream(q.device()),
                      lengths ? &*lengths : nullptr, bound ? &*bound : nullptr);
  });
  return grads;
}
} // namespace attn::torchop
