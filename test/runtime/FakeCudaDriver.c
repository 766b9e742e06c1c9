/* A stand-in for libcuda.so.1 with no devices, for testing the driver layer's error paths on
 * machines without a GPU. cuInit returns $FAKE_CUDA_INIT_RESULT when set. */
#include <stdlib.h>

typedef int CUresult;

static const char *errorName(CUresult result) {
  switch (result) {
  case 100: return "CUDA_ERROR_NO_DEVICE";
  case 101: return "CUDA_ERROR_INVALID_DEVICE";
  default: return 0;
  }
}

CUresult cuInit(unsigned flags) {
  (void)flags;
  const char *forced = getenv("FAKE_CUDA_INIT_RESULT");
  return forced ? atoi(forced) : 0;
}
CUresult cuGetErrorName(CUresult result, const char **name) {
  *name = errorName(result);
  return *name ? 0 : 1;
}
CUresult cuGetErrorString(CUresult result, const char **text) {
  *text = result == 100 ? "no CUDA-capable device is detected" : "invalid device ordinal";
  return 0;
}
CUresult cuDeviceGetCount(int *count) { *count = 0; return 0; }
CUresult cuDeviceGet(int *device, int ordinal) { (void)device; (void)ordinal; return 101; }
CUresult cuDeviceGetName(char *name, int length, int device) { (void)name; (void)length; (void)device; return 101; }
CUresult cuDeviceGetAttribute(int *value, int which, int device) { (void)value; (void)which; (void)device; return 101; }
CUresult cuDevicePrimaryCtxRetain(void **context, int device) { (void)context; (void)device; return 101; }
CUresult cuCtxSetCurrent(void *context) { (void)context; return 101; }
CUresult cuModuleLoadData(void **module, const void *image) { (void)module; (void)image; return 101; }
CUresult cuModuleGetFunction(void **function, void *module, const char *name) { (void)function; (void)module; (void)name; return 101; }
CUresult cuFuncSetAttribute(void *function, int which, int value) { (void)function; (void)which; (void)value; return 101; }
CUresult cuFuncGetAttribute(int *value, int which, void *function) { (void)value; (void)which; (void)function; return 101; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **args, void **extra) {
  (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shared;
  (void)stream; (void)args; (void)extra;
  return 101;
}
