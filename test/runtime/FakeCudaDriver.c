/* A stand-in for libcuda.so.1, for testing the driver layer and the kernel launches on machines
 * without a GPU. Nothing runs: launches are recorded for the test to inspect.
 *   FAKE_CUDA_DEVICES=N    N Hopper-like devices (default 0: every device call fails);
 *   FAKE_CUDA_INIT_RESULT  the CUresult cuInit returns. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
enum { kNoDevice = 100, kInvalidDevice = 101, kNotFound = 500 };

static const char *errorName(CUresult result) {
  switch (result) {
  case kNoDevice: return "CUDA_ERROR_NO_DEVICE";
  case kInvalidDevice: return "CUDA_ERROR_INVALID_DEVICE";
  case kNotFound: return "CUDA_ERROR_NOT_FOUND";
  default: return 0;
  }
}

static int devices(void) {
  const char *count = getenv("FAKE_CUDA_DEVICES");
  return count ? atoi(count) : 0;
}

/* Functions are handles 1..N into this table of names. */
enum { kMaxFunctions = 64, kMaxLaunches = 256 };
static char functionNames[kMaxFunctions][128];
static int functionSharedOptIn[kMaxFunctions];
static int functionCount;

typedef struct {
  int function;
  unsigned grid[3], block[3], sharedBytes;
  void *stream;
  void *firstPointer;    /* the first memref's aligned pointer */
  int64_t firstSizes[4]; /* the first memref's sizes (rank 4; rank 3 leaves [3] = stride) */
} FakeLaunch;
static FakeLaunch launches[kMaxLaunches];
static int contextRetains[8];
static int launchCount;

/* Test accessors. */
int fakeCudaLaunchCount(void) { return launchCount; }
const FakeLaunch *fakeCudaLaunch(int index) { return &launches[index]; }
const char *fakeCudaFunctionName(int handle) { return functionNames[handle - 1]; }
int fakeCudaSharedOptIn(int handle) { return functionSharedOptIn[handle - 1]; }
void fakeCudaReset(void) { launchCount = 0; }
int fakeCudaContextRetains(int device) { return contextRetains[device]; }

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
  *text = result == kNoDevice ? "no CUDA-capable device is detected" : "invalid device ordinal";
  return 0;
}
CUresult cuDeviceGetCount(int *count) { *count = devices(); return 0; }
CUresult cuDeviceGet(int *device, int ordinal) {
  if (ordinal < 0 || ordinal >= devices()) return kInvalidDevice;
  *device = ordinal;
  return 0;
}
CUresult cuDeviceGetName(char *name, int length, int device) {
  (void)device;
  strncpy(name, "Fake H100", (size_t)length);
  return devices() ? 0 : kInvalidDevice;
}
CUresult cuDeviceGetAttribute(int *value, int which, int device) {
  (void)device;
  if (!devices()) return kInvalidDevice;
  switch (which) {
  case 16: *value = 132; break;       /* multiprocessors */
  case 75: *value = 9; break;         /* compute major */
  case 76: *value = 0; break;         /* compute minor */
  case 97: *value = 232448; break;    /* max shared per block, opt-in */
  default: *value = 0;
  }
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **context, int device) {
  if (device >= 0 && device < 8) ++contextRetains[device];
  *context = (void *)0x1;
  return devices() ? 0 : kInvalidDevice;
}
CUresult cuCtxSetCurrent(void *context) { (void)context; return devices() ? 0 : kInvalidDevice; }
CUresult cuModuleLoadData(void **module, const void *image) {
  if (!devices()) return kInvalidDevice;
  /* A PTX module names its kernels in ".entry" lines; a real driver would compile them. */
  *module = (void *)image;
  return strstr((const char *)image, ".entry") ? 0 : kNotFound;
}
CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
  if (!devices()) return kInvalidDevice;
  char entry[160];
  strcpy(entry, ".entry ");
  strncat(entry, name, sizeof entry - 8);
  if (!strstr((const char *)module, entry) || functionCount == kMaxFunctions) return kNotFound;
  strncpy(functionNames[functionCount], name, 127);
  *function = (void *)(intptr_t)(++functionCount);
  return 0;
}
CUresult cuFuncSetAttribute(void *function, int which, int value) {
  if (!devices()) return kInvalidDevice;
  if (which == 8) functionSharedOptIn[(intptr_t)function - 1] = value;
  return 0;
}
CUresult cuFuncGetAttribute(int *value, int which, void *function) {
  (void)function;
  if (!devices()) return kInvalidDevice;
  *value = which == 4 ? 168 : which == 0 ? 1024 : 0; /* registers, max threads */
  return 0;
}
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **args, void **extra) {
  (void)extra;
  if (!devices() || launchCount == kMaxLaunches) return kInvalidDevice;
  FakeLaunch *launch = &launches[launchCount++];
  launch->function = (int)(intptr_t)f;
  launch->grid[0] = gx; launch->grid[1] = gy; launch->grid[2] = gz;
  launch->block[0] = bx; launch->block[1] = by; launch->block[2] = bz;
  launch->sharedBytes = shared;
  launch->stream = stream;
  /* Expanded memref: allocated, aligned, offset, sizes... */
  launch->firstPointer = *(void **)args[1];
  for (int i = 0; i < 4; ++i) launch->firstSizes[i] = *(int64_t *)args[3 + i];
  return 0;
}
