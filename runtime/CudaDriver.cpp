#include "runtime/CudaDriver.h"

#include "runtime/Log.h"

#include <cstdlib>
#include <dlfcn.h>
#include <map>
#include <mutex>

#ifdef ATTN_HAVE_CUDA_H
// Only to check, at compile time, that the values below are the driver API's.
#include <cuda.h>
#endif

namespace attn::runtime::cuda {
namespace {
using CUresult = int;
using CUdevice = int;
using CUcontext = void *;

// Values of cuda.h's enums (stable ABI since CUDA 9; checked against cuda.h when it exists).
constexpr int kAttributeMultiprocessorCount = 16;
constexpr int kAttributeComputeMajor = 75;
constexpr int kAttributeComputeMinor = 76;
constexpr int kAttributeMaxSharedPerBlockOptin = 97;
constexpr int kFunctionMaxThreadsPerBlock = 0;
constexpr int kFunctionSharedSizeBytes = 1;
constexpr int kFunctionLocalSizeBytes = 3;
constexpr int kFunctionNumRegs = 4;
constexpr int kFunctionMaxDynamicSharedBytes = 8;
#ifdef ATTN_HAVE_CUDA_H
static_assert(kAttributeMultiprocessorCount == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
static_assert(kAttributeComputeMajor == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
static_assert(kAttributeComputeMinor == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
static_assert(kAttributeMaxSharedPerBlockOptin ==
              CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
static_assert(kFunctionMaxThreadsPerBlock == CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
static_assert(kFunctionSharedSizeBytes == CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
static_assert(kFunctionLocalSizeBytes == CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES);
static_assert(kFunctionNumRegs == CU_FUNC_ATTRIBUTE_NUM_REGS);
static_assert(kFunctionMaxDynamicSharedBytes == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
static_assert(sizeof(CUdeviceptr) == sizeof(uint64_t));
#endif

/// The entry points we use, resolved by name.
struct Api {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuModuleLoadData)(ModuleHandle *, const void *);
  CUresult (*cuModuleGetFunction)(FunctionHandle *, ModuleHandle, const char *);
  CUresult (*cuFuncSetAttribute)(FunctionHandle, int, int);
  CUresult (*cuFuncGetAttribute)(int *, int, FunctionHandle);
  CUresult (*cuLaunchKernel)(FunctionHandle, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, StreamHandle, void **, void **);
  CUresult (*cuMemsetD32Async)(uint64_t, unsigned, size_t, StreamHandle);
  CUresult (*cuMemcpyDtoHAsync)(void *, uint64_t, size_t, StreamHandle);
  CUresult (*cuStreamSynchronize)(StreamHandle);
};

class DynamicDriver final : public Driver {
public:
  DynamicDriver(void *library, const Api &api, std::string path)
      : library_(library), api_(api), path_(std::move(path)) {
    check(api_.cuInit(0), "cuInit");
  }

  int deviceCount() override {
    int count = 0;
    check(api_.cuDeviceGetCount(&count), "cuDeviceGetCount");
    return count;
  }

  DeviceProperties properties(int ordinal) override {
    CUdevice device = deviceAt(ordinal);
    DeviceProperties properties;
    char name[256] = {};
    check(api_.cuDeviceGetName(name, sizeof name, device), "cuDeviceGetName");
    properties.name = name;
    properties.computeMajor = attribute(kAttributeComputeMajor, device);
    properties.computeMinor = attribute(kAttributeComputeMinor, device);
    properties.multiprocessors = attribute(kAttributeMultiprocessorCount, device);
    properties.maxSharedBytesPerBlockOptin = attribute(kAttributeMaxSharedPerBlockOptin, device);
    return properties;
  }

  void makeCurrent(int ordinal) override {
    // Retain each device's primary context once (a retain per launch would only grow its
    // reference count); later calls just make it current on this thread.
    CUcontext context = nullptr;
    {
      std::lock_guard<std::mutex> lock(contextsMutex_);
      auto found = contexts_.find(ordinal);
      if (found != contexts_.end()) {
        context = found->second;
      } else {
        CUdevice device = deviceAt(ordinal);
        check(api_.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        contexts_.emplace(ordinal, context);
      }
    }
    check(api_.cuCtxSetCurrent(context), "cuCtxSetCurrent");
  }

  ModuleHandle loadModule(const std::string &image) override {
    ModuleHandle module = nullptr;
    check(api_.cuModuleLoadData(&module, image.c_str()), "cuModuleLoadData");
    return module;
  }

  FunctionHandle function(ModuleHandle module, const std::string &name) override {
    FunctionHandle function = nullptr;
    check(api_.cuModuleGetFunction(&function, module, name.c_str()),
          "cuModuleGetFunction(" + name + ")");
    return function;
  }

  void setMaxDynamicSharedBytes(FunctionHandle function, int bytes) override {
    check(api_.cuFuncSetAttribute(function, kFunctionMaxDynamicSharedBytes, bytes),
          "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES=" + std::to_string(bytes) + ")");
  }

  KernelResources resources(FunctionHandle function) override {
    KernelResources resources;
    auto get = [&](int which, int &value, const char *name) {
      check(api_.cuFuncGetAttribute(&value, which, function),
            std::string("cuFuncGetAttribute(") + name + ")");
    };
    get(kFunctionNumRegs, resources.registers, "NUM_REGS");
    get(kFunctionLocalSizeBytes, resources.localBytes, "LOCAL_SIZE_BYTES");
    get(kFunctionSharedSizeBytes, resources.staticSharedBytes, "SHARED_SIZE_BYTES");
    get(kFunctionMaxThreadsPerBlock, resources.maxThreadsPerBlock, "MAX_THREADS_PER_BLOCK");
    return resources;
  }

  void launch(FunctionHandle function, const LaunchShape &shape, StreamHandle stream,
              void **arguments) override {
    check(api_.cuLaunchKernel(function, shape.grid[0], shape.grid[1], shape.grid[2], shape.block[0],
                              shape.block[1], shape.block[2], shape.dynamicSharedBytes, stream,
                              arguments, nullptr),
          "cuLaunchKernel");
  }

  void fillWords(void *device, uint32_t value, size_t count, StreamHandle stream) override {
    check(api_.cuMemsetD32Async(addressOf(device), value, count, stream), "cuMemsetD32Async");
  }

  void copyToHost(void *host, const void *device, size_t bytes, StreamHandle stream) override {
    check(api_.cuMemcpyDtoHAsync(host, addressOf(device), bytes, stream), "cuMemcpyDtoHAsync");
    check(api_.cuStreamSynchronize(stream), "cuStreamSynchronize");
  }

private:
  /// A CUdeviceptr (an integer the width of a pointer).
  static uint64_t addressOf(const void *device) {
    return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(device));
  }

  CUdevice deviceAt(int ordinal) {
    CUdevice device = 0;
    check(api_.cuDeviceGet(&device, ordinal), "cuDeviceGet(" + std::to_string(ordinal) + ")");
    return device;
  }

  int attribute(int which, CUdevice device) {
    int value = 0;
    check(api_.cuDeviceGetAttribute(&value, which, device),
          "cuDeviceGetAttribute(" + std::to_string(which) + ")");
    return value;
  }

  void check(CUresult result, const std::string &call) {
    if (result == 0)
      return;
    const char *name = nullptr, *description = nullptr;
    if (api_.cuGetErrorName(result, &name) != 0 || !name)
      name = "unknown CUresult";
    if (api_.cuGetErrorString(result, &description) != 0 || !description)
      description = "";
    throw CudaError(call + " failed: " + name + " (" + std::to_string(result) + ": " + description +
                    ") [driver " + path_ + "]");
  }

  void *library_; // kept open for the life of the process
  std::mutex contextsMutex_;
  std::map<int, CUcontext> contexts_;
  Api api_;
  std::string path_;
};

template <typename Function>
void resolve(void *library, const std::string &path, const char *symbol, Function &slot) {
  void *address = dlsym(library, symbol);
  if (!address)
    throw CudaError("the CUDA driver " + path + " lacks " + symbol +
                    " (a driver older than the API we use?)");
  slot = reinterpret_cast<Function>(address);
}
} // namespace

std::string DeviceProperties::targetName() const {
  std::string name = "sm_" + std::to_string(computeMajor) + std::to_string(computeMinor);
  return computeMajor == 9 && computeMinor == 0 ? name + "a" : name;
}

std::unique_ptr<Driver> Driver::load(const std::string &path) {
  void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char *why = dlerror();
    throw CudaError("CUDA is not available: cannot load the driver library " + path + " (" +
                    (why ? why : "unknown error") +
                    "). Install the NVIDIA driver, or run on the CPU.");
  }
  Api api{};
  resolve(library, path, "cuInit", api.cuInit);
  resolve(library, path, "cuGetErrorName", api.cuGetErrorName);
  resolve(library, path, "cuGetErrorString", api.cuGetErrorString);
  resolve(library, path, "cuDeviceGetCount", api.cuDeviceGetCount);
  resolve(library, path, "cuDeviceGet", api.cuDeviceGet);
  resolve(library, path, "cuDeviceGetName", api.cuDeviceGetName);
  resolve(library, path, "cuDeviceGetAttribute", api.cuDeviceGetAttribute);
  resolve(library, path, "cuDevicePrimaryCtxRetain", api.cuDevicePrimaryCtxRetain);
  resolve(library, path, "cuCtxSetCurrent", api.cuCtxSetCurrent);
  resolve(library, path, "cuModuleLoadData", api.cuModuleLoadData);
  resolve(library, path, "cuModuleGetFunction", api.cuModuleGetFunction);
  resolve(library, path, "cuFuncSetAttribute", api.cuFuncSetAttribute);
  resolve(library, path, "cuFuncGetAttribute", api.cuFuncGetAttribute);
  resolve(library, path, "cuLaunchKernel", api.cuLaunchKernel);
  // cuda.h maps these names to the entry points below (CUdeviceptr and size_t arguments).
  resolve(library, path, "cuMemsetD32Async", api.cuMemsetD32Async);
  resolve(library, path, "cuMemcpyDtoHAsync_v2", api.cuMemcpyDtoHAsync);
  resolve(library, path, "cuStreamSynchronize", api.cuStreamSynchronize);
  return std::make_unique<DynamicDriver>(library, api, path);
}

namespace {
struct ProcessDriver {
  std::unique_ptr<Driver> driver;
  std::string error;
};

ProcessDriver &processDriver() {
  static ProcessDriver &loaded = *[] {
    auto *result = new ProcessDriver;
    const char *override = std::getenv("ATTN_LIBCUDA");
    std::string path = override && *override ? override : "libcuda.so.1";
    try {
      result->driver = Driver::load(path);
      log(LogLevel::Info, "CUDA driver loaded from " + path);
    } catch (const CudaError &error) {
      result->error = error.what();
      log(LogLevel::Info, result->error);
    }
    return result;
  }();
  return loaded;
}
} // namespace

Driver &Driver::get() {
  ProcessDriver &loaded = processDriver();
  if (!loaded.driver)
    throw CudaError(loaded.error);
  return *loaded.driver;
}

bool Driver::available() { return processDriver().driver != nullptr; }
} // namespace attn::runtime::cuda
