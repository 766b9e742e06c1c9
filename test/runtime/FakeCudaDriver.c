/* A stand-in for libcuda.so.1, for testing the driver layer and the kernel launches on machines
 * without a GPU. Nothing runs: launches are recorded for the test to inspect, every parameter
 * included (as many as the kernel's PTX .entry declares).
 *   FAKE_CUDA_DEVICES=N    N Hopper-like devices (default 0: every device call fails);
 *   FAKE_CUDA_INIT_RESULT  the CUresult cuInit returns.
 * "Device" memory is host memory here: cuMemsetD32Async and cuMemcpyDtoHAsync read and write
 * through the pointers they get (tests pass host buffers), and fakeCudaSetFault makes launches
 * of a kernel set a capture fault flag, as a region that indexed outside a capture would. */
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

/* Functions are handles 1..N into this table of names and parameter sizes. */
enum { kMaxFunctions = 64, kMaxLaunches = 256, kMaxParameters = 160 };
static char functionNames[kMaxFunctions][128];
static int functionSharedOptIn[kMaxFunctions];
static int functionParameterCount[kMaxFunctions];
static unsigned char functionParameterBytes[kMaxFunctions][kMaxParameters];
static int functionCount;

typedef struct {
  int function;
  unsigned grid[3], block[3], sharedBytes;
  void *stream;
  void *firstPointer;    /* the first memref's aligned pointer */
  int64_t firstSizes[4]; /* the first memref's sizes (rank 4; rank 3 leaves [3] = stride) */
  int parameterCount;    /* what the kernel's .entry declares (-1: unknown or too many) */
  int64_t parameters[kMaxParameters]; /* each parameter's value (narrower ones sign-extended) */
} FakeLaunch;
static FakeLaunch launches[kMaxLaunches];
static int contextRetains[8];
static int launchCount;
static int memsetCount, copyCount, synchronizeCount;
static char faultKernel[64];
static int faultFlag = -1;

/* Test accessors. */
int fakeCudaLaunchCount(void) { return launchCount; }
const FakeLaunch *fakeCudaLaunch(int index) { return &launches[index]; }
const char *fakeCudaFunctionName(int handle) { return functionNames[handle - 1]; }
int fakeCudaSharedOptIn(int handle) { return functionSharedOptIn[handle - 1]; }
void fakeCudaReset(void) {
  launchCount = memsetCount = copyCount = synchronizeCount = 0;
  faultFlag = -1;
}
int fakeCudaContextRetains(int device) { return contextRetains[device]; }
/* cuMemsetD32Async, cuMemcpyDtoHAsync and cuStreamSynchronize calls since the last reset. */
int fakeCudaMemsetCount(void) { return memsetCount; }
int fakeCudaCopyCount(void) { return copyCount; }
int fakeCudaSynchronizeCount(void) { return synchronizeCount; }
/* Until the next reset, each launch of a kernel whose name ends in `suffix` sets fault flag
 * `flag` to 1: the kernel's last parameters are the flags' rank-1 i32 memref (allocated,
 * aligned, offset, size, stride), as the GPU lowering emits them for variants with captures. */
void fakeCudaSetFault(const char *suffix, int flag) {
  strncpy(faultKernel, suffix, sizeof faultKernel - 1);
  faultFlag = flag;
}

static int endsWith(const char *text, const char *suffix) {
  size_t n = strlen(text), m = strlen(suffix);
  return n >= m && strcmp(text + n - m, suffix) == 0;
}

/* The parameter sizes of `.entry <name>(` ... `)` in a PTX module (`.param .u64 ...`: the
 * digits after the type letter are its bits); -1 when not found or too many. */
static int parseParameters(const char *ptx, const char *entry, unsigned char *bytes) {
  const char *at = strstr(ptx, entry);
  const char *end = at ? strchr(at, ')') : 0;
  if (!end) return -1;
  int count = 0;
  for (const char *p = strstr(at, ".param"); p && p < end; p = strstr(p + 6, ".param")) {
    const char *type = p + 6;
    while (*type == ' ' || *type == '\t') ++type;
    int bits = type[0] == '.' ? atoi(type + 2) : 64;
    if (count == kMaxParameters) return -1;
    bytes[count++] = (unsigned char)(bits >= 8 ? bits / 8 : 8);
  }
  return count;
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
  strcat(entry, "(");
  functionParameterCount[functionCount] =
      parseParameters((const char *)module, entry, functionParameterBytes[functionCount]);
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
  /* Every parameter the kernel declares (the launcher checks it passes that many). */
  const int handle = (int)(intptr_t)f - 1;
  launch->parameterCount = functionParameterCount[handle];
  for (int i = 0; i < launch->parameterCount; ++i) {
    const unsigned char bytes = functionParameterBytes[handle][i];
    launch->parameters[i] = bytes == 8   ? *(int64_t *)args[i]
                            : bytes == 4 ? *(int32_t *)args[i]
                            : bytes == 2 ? *(int16_t *)args[i]
                                         : *(int8_t *)args[i];
  }
  if (faultFlag >= 0 && endsWith(functionNames[handle], faultKernel) &&
      launch->parameterCount >= 5) {
    const int64_t *flags = launch->parameters + launch->parameterCount - 5;
    int32_t *aligned = (int32_t *)(intptr_t)flags[1];
    if (faultFlag < flags[3]) aligned[flags[2] + faultFlag] = 1;
  }
  return 0;
}

CUresult cuMemsetD32Async(uint64_t device, unsigned value, size_t count, void *stream) {
  (void)stream;
  if (!devices()) return kInvalidDevice;
  uint32_t *words = (uint32_t *)(intptr_t)device;
  for (size_t i = 0; i < count; ++i) words[i] = value;
  ++memsetCount;
  return 0;
}
CUresult cuMemcpyDtoHAsync_v2(void *host, uint64_t device, size_t bytes, void *stream) {
  (void)stream;
  if (!devices()) return kInvalidDevice;
  memcpy(host, (const void *)(intptr_t)device, bytes);
  ++copyCount;
  return 0;
}
CUresult cuStreamSynchronize(void *stream) {
  (void)stream;
  if (!devices()) return kInvalidDevice;
  ++synchronizeCount;
  return 0;
}
