// The device kit's own ops, torch.ops.attn_kit.*, compiled only into the kit's libattn_torch.so
// (cmake/DeviceKit.cmake). They reach the runtime without CUDA tensors, so the kit can be filled
// and checked on a machine without a GPU (against the stand-in libcuda) and measured on the GPU
// machine:
//   prepare(variant, head_dim, causal, dtype, device, captures=None) -> [compile_ms, wall_ms]
//       compiles (or reads from $ATTN_CACHE_DIR) and loads a variant's forward + backward PTX;
//       `captures`: one "f<rank>" (floating) or "i<rank>" (integer) per captured tensor;
//   jit_statistics() -> [compiles, disk_hits, memory_hits];   reset_jit_statistics();
//   reconfigure() re-reads ATTN_CACHE_DIR / ATTN_CACHE_DISABLE / ATTN_DUMP_DIR;
//   launch_probe(variant, head_dim, causal, dtype, sizes=[B, Hq, Hkv, Sq, Sk], captures=None)
//       -> block rows [fwd, bwd_dq, bwd_dkdv, bwd_delta]: launches forward and backward with
//       made-up device addresses on stream 0x5150, for the stand-in libcuda to record (captures:
//       made-up addresses of the IR's static sizes, 7 where dynamic; host memory as the fault
//       flags' scratch, which the stand-in zeroes and reads back). Refused unless
//       FAKE_CUDA_DEVICES is set (a real GPU would fault on those addresses).
#include "runtime/CudaDriver.h"
#include "runtime/GpuKernels.h"
#include "runtime/Jit.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <vector>

namespace attn::kit {
namespace {
using Names = std::vector<std::string>;

runtime::VariantSpec specOf(const std::string &variant, int64_t headDim, bool causal,
                           const std::vector<std::string> &captures) {
  runtime::VariantSpec spec;
  spec.variant = variant;
  spec.headDim = spec.valueHeadDim = headDim;
  spec.causal = causal;
  for (const std::string &capture : captures) {
    TORCH_CHECK(capture.size() >= 2 && (capture[0] == 'f' || capture[0] == 'i'),
                "attn_kit: a capture is f<rank> or i<rank>, not '", capture, "'");
    spec.captures.push_back({std::stoll(capture.substr(1)), capture[0] == 'f', capture});
  }
  return spec;
}

runtime::GpuDtype dtypeOf(const std::string &name) {
  if (name == "bf16" || name == "bfloat16")
    return runtime::GpuDtype::BFloat16;
  if (name == "f16" || name == "float16" || name == "half")
    return runtime::GpuDtype::Float16;
  TORCH_CHECK(false, "attn_kit: dtype must be bf16 or f16, not '", name, "'");
}

std::shared_ptr<const runtime::GpuKernels>
kernelsOf(const std::string &variant, int64_t headDim, bool causal, const std::string &dtype,
          int64_t device, const std::vector<std::string> &captures) {
  try {
    return runtime::getGpuKernels(specOf(variant, headDim, causal, captures), dtypeOf(dtype),
                                  static_cast<int>(device));
  } catch (const runtime::CompileError &error) {
    TORCH_CHECK(false, "attn_kit: ", error.what());
  } catch (const runtime::cuda::CudaError &error) {
    TORCH_CHECK(false, "attn_kit: ", error.what());
  }
}

std::vector<double> prepare(std::string variant, int64_t headDim, bool causal, std::string dtype,
                            int64_t device, c10::optional<std::vector<std::string>> captures) {
  auto start = std::chrono::steady_clock::now();
  auto kernels = kernelsOf(variant, headDim, causal, dtype, device, captures.value_or(Names{}));
  double wall =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return {kernels->compileMillis(), wall};
}

std::vector<int64_t> jitStatistics() {
  runtime::JitStatistics statistics = runtime::Jit::instance().statistics();
  return {static_cast<int64_t>(statistics.compiles), static_cast<int64_t>(statistics.diskHits),
          static_cast<int64_t>(statistics.memoryHits)};
}

void resetJitStatistics() { runtime::Jit::instance().resetStatistics(); }

void reconfigure() { runtime::Jit::instance().reconfigureFromEnvironment(); }

template <int Rank>
runtime::DeviceView<Rank> fakeView(uintptr_t address, std::array<int64_t, Rank> sizes) {
  runtime::DeviceView<Rank> view;
  view.data = reinterpret_cast<void *>(address);
  int64_t stride = 1;
  for (int i = Rank - 1; i >= 0; --i) {
    view.sizes[i] = sizes[i];
    view.strides[i] = stride;
    stride *= sizes[i];
  }
  return view;
}

std::vector<int64_t> launchProbe(std::string variant, int64_t headDim, bool causal,
                                 std::string dtype, std::vector<int64_t> sizes,
                                 c10::optional<std::vector<std::string>> captureNames) {
  const Names captures = captureNames.value_or(Names{});
  TORCH_CHECK(std::getenv("FAKE_CUDA_DEVICES") != nullptr,
              "attn_kit.launch_probe launches with made-up addresses: only against the stand-in "
              "libcuda (ATTN_LIBCUDA=.../libattn_fake_cuda.so, FAKE_CUDA_DEVICES=N)");
  TORCH_CHECK(sizes.size() == 5, "attn_kit.launch_probe: sizes are [B, Hq, Hkv, Sq, Sk]");
  const int64_t b = sizes[0], h = sizes[1], hkv = sizes[2], sq = sizes[3], sk = sizes[4],
                d = headDim;
  auto kernels = kernelsOf(variant, headDim, causal, dtype, 0, captures);
  auto q = fakeView<4>(0x10000, {b, h, sq, d}), k = fakeView<4>(0x20000, {b, hkv, sk, d}),
       v = fakeView<4>(0x30000, {b, hkv, sk, d}), o = fakeView<4>(0x40000, {b, h, sq, d}),
       gradOut = fakeView<4>(0x50000, {b, h, sq, d}),
       gradQuery = fakeView<4>(0x60000, {b, h, sq, d}),
       gradKey = fakeView<4>(0x70000, {b, hkv, sk, d}),
       gradValue = fakeView<4>(0x80000, {b, hkv, sk, d});
  auto lse = fakeView<3>(0x90000, {b, h, sq}), delta = fakeView<3>(0xa0000, {b, h, sq});
  void *stream = reinterpret_cast<void *>(0x5150);
  runtime::DeviceCaptures deviceCaptures;
  std::vector<int64_t> scratch(kernels->captureScratchBytes() / 8 + 1, -1);
  uintptr_t address = 0xc0000;
  for (const runtime::CaptureDeclaration &declared : kernels->captures()) {
    runtime::CaptureView view;
    view.data = reinterpret_cast<void *>(address += 0x10000);
    for (int64_t size : declared.sizes)
      view.sizes.push_back(size < 0 ? 7 : size);
    deviceCaptures.views.push_back(view);
  }
  deviceCaptures.scratch = scratch.data();
  const runtime::DeviceCaptures *bound = captures.empty() ? nullptr : &deviceCaptures;
  try {
    kernels->forward(q, k, v, o, lse, stream, nullptr, bound);
    kernels->backward(q, k, v, o, gradOut, lse, delta, gradQuery, gradKey, gradValue, stream,
                      nullptr, bound);
  } catch (const runtime::cuda::CudaError &error) {
    TORCH_CHECK(false, "attn_kit: ", error.what());
  } catch (const runtime::CallError &error) {
    TORCH_CHECK(false, "attn_kit: ", error.what());
  }
  return {kernels->blockRows("fwd"), kernels->blockRows("bwd_dq"), kernels->blockRows("bwd_dkdv"),
          kernels->blockRows("bwd_delta")};
}
} // namespace
} // namespace attn::kit

TORCH_LIBRARY(attn_kit, m) {
  m.def("prepare(str variant, int head_dim, bool causal, str dtype, int device=0, "
        "str[]? captures=None) -> float[]",
        attn::kit::prepare);
  m.def("jit_statistics() -> int[]", attn::kit::jitStatistics);
  m.def("reset_jit_statistics() -> ()", attn::kit::resetJitStatistics);
  m.def("reconfigure() -> ()", attn::kit::reconfigure);
  m.def("launch_probe(str variant, int head_dim, bool causal, str dtype, int[] sizes, "
        "str[]? captures=None) -> int[]",
        attn::kit::launchProbe);
}
