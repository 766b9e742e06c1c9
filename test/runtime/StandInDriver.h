// The stand-in libcuda (test/runtime/FakeCudaDriver.c) as the GPU launch tests see it: its
// recording of launches, read through its test accessors; the test environment that loads it
// (two fake Hopper devices, a fresh kernel cache); fake device views and a GQA problem.
#ifndef TEST_RUNTIME_STANDINDRIVER_H
#define TEST_RUNTIME_STANDINDRIVER_H

#include "runtime/CudaDriver.h"
#include "runtime/GpuKernels.h"
#include "runtime/Jit.h"
#include "test/runtime/ProcessRunner.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <dlfcn.h>
#include <stdexcept>
#include <string>

namespace attn::runtime::standin {
struct FakeLaunch {
  int function;
  unsigned grid[3], block[3], sharedBytes;
  void *stream;
  void *firstPointer;
  int64_t firstSizes[4];
  int parameterCount;
  int64_t parameters[160]; // FakeCudaDriver.c: kMaxParameters
};

/// The stand-in driver's recording, read through its test accessors.
struct FakeDriver {
  int (*launchCount)();
  const FakeLaunch *(*launch)(int);
  const char *(*functionName)(int);
  int (*sharedOptIn)(int);
  void (*reset)();
  int (*contextRetains)(int);
  int (*memsetCount)();
  int (*copyCount)();
  int (*synchronizeCount)();
  void (*setFault)(const char *, int);

  static FakeDriver &get() {
    static FakeDriver driver = [] {
      cuda::Driver::get(); // loads the stand-in named by ATTN_LIBCUDA
      void *library = dlopen(ATTN_FAKE_LIBCUDA, RTLD_NOW | RTLD_NOLOAD);
      if (!library)
        throw std::runtime_error("the stand-in libcuda is not loaded");
      FakeDriver fake;
      fake.launchCount = reinterpret_cast<int (*)()>(dlsym(library, "fakeCudaLaunchCount"));
      fake.launch = reinterpret_cast<const FakeLaunch *(*)(int)>(dlsym(library, "fakeCudaLaunch"));
      fake.functionName =
          reinterpret_cast<const char *(*)(int)>(dlsym(library, "fakeCudaFunctionName"));
      fake.sharedOptIn = reinterpret_cast<int (*)(int)>(dlsym(library, "fakeCudaSharedOptIn"));
      fake.reset = reinterpret_cast<void (*)()>(dlsym(library, "fakeCudaReset"));
      fake.contextRetains =
          reinterpret_cast<int (*)(int)>(dlsym(library, "fakeCudaContextRetains"));
      fake.memsetCount = reinterpret_cast<int (*)()>(dlsym(library, "fakeCudaMemsetCount"));
      fake.copyCount = reinterpret_cast<int (*)()>(dlsym(library, "fakeCudaCopyCount"));
      fake.synchronizeCount =
          reinterpret_cast<int (*)()>(dlsym(library, "fakeCudaSynchronizeCount"));
      fake.setFault =
          reinterpret_cast<void (*)(const char *, int)>(dlsym(library, "fakeCudaSetFault"));
      return fake;
    }();
    return driver;
  }
};

class StandInDriverEnvironment : public ::testing::Environment {
public:
  void SetUp() override {
    setenv("ATTN_LIBCUDA", ATTN_FAKE_LIBCUDA, 1);
    setenv("FAKE_CUDA_DEVICES", "2", 1);
    setenv("ATTN_CACHE_DIR", cache_.path().c_str(), 1);
    unsetenv("ATTN_CACHE_DISABLE");
    unsetenv("ATTN_DUMP_DIR");
    Jit::instance().reconfigureFromEnvironment();
  }

private:
  test::TemporaryDirectory cache_;
};
inline ::testing::Environment *const environment =
    ::testing::AddGlobalTestEnvironment(new StandInDriverEnvironment);

template <int Rank> inline DeviceView<Rank> view(uintptr_t address, std::array<int64_t, Rank> sizes) {
  DeviceView<Rank> result;
  result.data = reinterpret_cast<void *>(address);
  int64_t stride = 1;
  for (int i = Rank - 1; i >= 0; --i) {
    result.sizes[i] = sizes[i];
    result.strides[i] = stride;
    stride *= sizes[i];
  }
  return result;
}

inline VariantSpec spec(const std::string &variant, int64_t dim) {
  VariantSpec result;
  result.variant = variant;
  result.headDim = result.valueHeadDim = dim;
  return result;
}

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Problem {
  int64_t batch = 3, heads = 8, kvHeads = 2, queries = 200, keys = 77, dim = 64;
  DeviceView4 q = view<4>(0x10000, {batch, heads, queries, dim});
  DeviceView4 k = view<4>(0x20000, {batch, kvHeads, keys, dim});
  DeviceView4 v = view<4>(0x30000, {batch, kvHeads, keys, dim});
  DeviceView4 o = view<4>(0x40000, {batch, heads, queries, dim});
  DeviceView4 gradOut = view<4>(0x50000, {batch, heads, queries, dim});
  DeviceView4 gradQuery = view<4>(0x60000, {batch, heads, queries, dim});
  DeviceView4 gradKey = view<4>(0x70000, {batch, kvHeads, keys, dim});
  DeviceView4 gradValue = view<4>(0x80000, {batch, kvHeads, keys, dim});
  DeviceView3 lse = view<3>(0x90000, {batch, heads, queries});
  DeviceView3 delta = view<3>(0xa0000, {batch, heads, queries});
};

inline std::string nameOf(const FakeLaunch &launch) {
  return FakeDriver::get().functionName(launch.function);
}

inline bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}
} // namespace attn::runtime::standin

#endif // TEST_RUNTIME_STANDINDRIVER_H
