// The driver layer without a GPU: a missing libcuda is a clear exception, and failing driver
// calls name the call and the CUresult (checked against a stand-in libcuda with no devices).
#include "runtime/CudaDriver.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

namespace attn::runtime::cuda {
namespace {
std::string messageOf(const std::function<void()> &body) {
  try {
    body();
  } catch (const CudaError &error) {
    return error.what();
  }
  return "(no CudaError thrown)";
}

TEST(CudaDriver, AbsentDriverIsAClearErrorNotACrash) {
  if (getenv("ATTN_LIBCUDA"))
    GTEST_SKIP() << "ATTN_LIBCUDA overrides the driver";
  void *probe = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (probe) {
    dlclose(probe);
    GTEST_SKIP() << "this machine has libcuda.so.1";
  }
  EXPECT_FALSE(Driver::available());
  std::string message = messageOf([] { Driver::get(); });
  EXPECT_NE(message.find("CUDA is not available"), std::string::npos) << message;
  EXPECT_NE(message.find("libcuda.so.1"), std::string::npos) << message;
  // Asking again gives the same answer instead of retrying or crashing.
  EXPECT_EQ(messageOf([] { Driver::get(); }), message);
}

TEST(CudaDriver, MissingLibraryNamesItsPath) {
  std::string message = messageOf([] { Driver::load("/nonexistent/libcuda.so.1"); });
  EXPECT_NE(message.find("/nonexistent/libcuda.so.1"), std::string::npos) << message;
}

TEST(CudaDriver, LibraryWithoutTheApiNamesTheMissingSymbol) {
  std::string message = messageOf([] { Driver::load("libm.so.6"); });
  EXPECT_NE(message.find("lacks cuInit"), std::string::npos) << message;
}

TEST(CudaDriver, FailingInitNamesTheCallAndTheResult) {
  setenv("FAKE_CUDA_INIT_RESULT", "100", 1);
  std::string message = messageOf([] { Driver::load(ATTN_FAKE_LIBCUDA); });
  unsetenv("FAKE_CUDA_INIT_RESULT");
  EXPECT_NE(message.find("cuInit failed: CUDA_ERROR_NO_DEVICE"), std::string::npos) << message;
  EXPECT_NE(message.find("no CUDA-capable device is detected"), std::string::npos) << message;
}

TEST(CudaDriver, EveryCallIsChecked) {
  std::unique_ptr<Driver> driver = Driver::load(ATTN_FAKE_LIBCUDA);
  EXPECT_EQ(driver->deviceCount(), 0);
  std::string message = messageOf([&] { driver->properties(0); });
  EXPECT_NE(message.find("cuDeviceGet(0) failed: CUDA_ERROR_INVALID_DEVICE"), std::string::npos)
      << message;
  message = messageOf([&] { driver->loadModule(".version 8.0\n"); });
  EXPECT_NE(message.find("cuModuleLoadData failed"), std::string::npos) << message;
  message = messageOf([&] { driver->launch(nullptr, LaunchShape{}, nullptr, nullptr); });
  EXPECT_NE(message.find("cuLaunchKernel failed"), std::string::npos) << message;
}

TEST(CudaDriver, TargetNameOfAHopperIsTheArchSpecificOne) {
  DeviceProperties hopper;
  hopper.computeMajor = 9;
  EXPECT_EQ(hopper.targetName(), "sm_90a");
  DeviceProperties ampere;
  ampere.computeMajor = 8;
  ampere.computeMinor = 6;
  EXPECT_EQ(ampere.targetName(), "sm_86");
}
} // namespace
} // namespace attn::runtime::cuda
