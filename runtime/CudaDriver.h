// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1"): the project builds and
// runs without CUDA, and a machine without a GPU gets a clear exception, not a link error.
// Every call is checked; a failure throws CudaError naming the call and the CUresult name.
// Free of CUDA, MLIR and torch headers.
#ifndef RUNTIME_CUDADRIVER_H
#define RUNTIME_CUDADRIVER_H

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace attn::runtime::cuda {

class CudaError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Opaque driver handles (CUmodule, CUfunction, CUstream, CUcontext).
using ModuleHandle = struct CudaModuleOpaque *;
using FunctionHandle = struct CudaFunctionOpaque *;
using StreamHandle = void *;

struct DeviceProperties {
  std::string name;
  int computeMajor = 0, computeMinor = 0;
  int multiprocessors = 0;
  int maxSharedBytesPerBlockOptin = 0;
  /// "sm_90a" for 9.0 (the arch-specific target our sm_90 kernels use), else "sm_XY".
  std::string targetName() const;
};

/// What ptxas allocated for a kernel; logged at ATTN_LOG=info.
struct KernelResources {
  int registers = 0;
  int localBytes = 0; ///< > 0 means spills or stack
  int staticSharedBytes = 0;
  int maxThreadsPerBlock = 0;
};

struct LaunchShape {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned dynamicSharedBytes = 0;
};

class Driver {
public:
  /// The process's driver: libcuda.so.1, or the library named by $ATTN_LIBCUDA. Loaded and
  /// initialized (cuInit) once; throws CudaError when that fails, every time it is asked.
  static Driver &get();
  /// False when get() would throw; never throws.
  static bool available();
  /// Loads a specific library (tests use a stand-in); throws CudaError.
  static std::unique_ptr<Driver> load(const std::string &library);

  virtual ~Driver() = default;
  virtual int deviceCount() = 0;
  virtual DeviceProperties properties(int device) = 0;
  /// Makes the device's primary context current on this thread (what the CUDA runtime and
  /// torch use, so our modules and torch's memory share one context).
  virtual void makeCurrent(int device) = 0;
  /// Loads PTX (JIT-compiled by the driver) or a cubin into the current context.
  virtual ModuleHandle loadModule(const std::string &image) = 0;
  virtual FunctionHandle function(ModuleHandle module, const std::string &name) = 0;
  /// Opts a kernel into more than 48 KB of dynamic shared memory.
  virtual void setMaxDynamicSharedBytes(FunctionHandle function, int bytes) = 0;
  virtual KernelResources resources(FunctionHandle function) = 0;
  virtual void launch(FunctionHandle function, const LaunchShape &shape, StreamHandle stream,
                      void **arguments) = 0;
  /// Sets `count` 32-bit words at device address `device` to `value`, in stream order.
  virtual void fillWords(void *device, uint32_t value, size_t count, StreamHandle stream) = 0;
  /// Copies `bytes` from device to host memory in stream order, then waits for the stream:
  /// `host` holds them on return.
  virtual void copyToHost(void *host, const void *device, size_t bytes, StreamHandle stream) = 0;
};

} // namespace attn::runtime::cuda

#endif // RUNTIME_CUDADRIVER_H
