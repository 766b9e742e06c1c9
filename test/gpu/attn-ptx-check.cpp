// attn-ptx-check: runs the PTX that `attnc --emit=ptx` wrote on a CUDA GPU and compares
// forward (O, LSE) and backward (dQ, dK, dV) against a float64 reference computed here.
// It depends on nothing but libcuda.so.1 (dlopen) and the C++17 standard library, so it can be
// built on a GPU machine without LLVM/MLIR:
//
//   g++ -O2 -std=c++17 test/gpu/attn-ptx-check.cpp -ldl -o attn-ptx-check
//   attnc --variant=sigmoid --head-dim=128 --causal --dtype=bf16 --target=sm_90a -o k.ptx
//   attn-ptx-check k.ptx --normalizer=sigmoid --head-dim=128 --causal --dtype=bf16
//
// The launch contract comes from the `// attn.kernel` lines attnc puts at the top of the PTX.
// Exit status: 0 all within tolerance, 1 a mismatch or error, 77 no GPU (ctest skip).
// `attn-ptx-check --self-test` checks the reference's gradients by finite differences.
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {
constexpr int kSkip = 77;

// ----- the CUDA driver API, loaded at run time -----
using CUresult = int;
using CUdevice = int;
using CUcontext = void *;
using CUmodule = void *;
using CUfunction = void *;
using CUdeviceptr = unsigned long long;
constexpr int kMaxDynamicSharedAttribute = 8; // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

struct Cuda {
  CUresult (*init)(unsigned);
  CUresult (*deviceGetCount)(int *);
  CUresult (*deviceGet)(CUdevice *, int);
  CUresult (*primaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*ctxSetCurrent)(CUcontext);
  CUresult (*moduleLoadData)(CUmodule *, const void *);
  CUresult (*moduleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*funcSetAttribute)(CUfunction, int, int);
  CUresult (*memAlloc)(CUdeviceptr *, size_t);
  CUresult (*memFree)(CUdeviceptr);
  CUresult (*memcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*memcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*memsetD8)(CUdeviceptr, unsigned char, size_t);
  CUresult (*launchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, void *, void **, void **);
  CUresult (*ctxSynchronize)();
  CUresult (*getErrorString)(CUresult, const char **);

  void check(CUresult result, const char *what) const {
    if (result == 0)
      return;
    const char *message = "unknown";
    if (getErrorString)
      getErrorString(result, &message);
    throw std::runtime_error(std::string(what) + ": CUDA error " + std::to_string(result) +
                             " (" + message + ")");
  }
};

template <typename F> bool bind(void *library, F &function, const char *name) {
  function = reinterpret_cast<F>(dlsym(library, name));
  return function != nullptr;
}

bool loadCuda(Cuda &cuda) {
  const char *path = std::getenv("ATTN_LIBCUDA");
  void *library = dlopen(path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!library)
    return false;
  bool ok = bind(library, cuda.init, "cuInit") &&
            bind(library, cuda.deviceGetCount, "cuDeviceGetCount") &&
            bind(library, cuda.deviceGet, "cuDeviceGet") &&
            bind(library, cuda.primaryCtxRetain, "cuDevicePrimaryCtxRetain") &&
            bind(library, cuda.ctxSetCurrent, "cuCtxSetCurrent") &&
            bind(library, cuda.moduleLoadData, "cuModuleLoadData") &&
            bind(library, cuda.moduleGetFunction, "cuModuleGetFunction") &&
            bind(library, cuda.funcSetAttribute, "cuFuncSetAttribute") &&
            bind(library, cuda.memAlloc, "cuMemAlloc_v2") &&
            bind(library, cuda.memFree, "cuMemFree_v2") &&
            bind(library, cuda.memcpyHtoD, "cuMemcpyHtoD_v2") &&
            bind(library, cuda.memcpyDtoH, "cuMemcpyDtoH_v2") &&
            bind(library, cuda.memsetD8, "cuMemsetD8_v2") &&
            bind(library, cuda.launchKernel, "cuLaunchKernel") &&
            bind(library, cuda.ctxSynchronize, "cuCtxSynchronize") &&
            bind(library, cuda.getErrorString, "cuGetErrorString");
  int devices = 0;
  return ok && cuda.init(0) == 0 && cuda.deviceGetCount(&devices) == 0 && devices > 0;
}

// ----- 16-bit floats -----
uint16_t toBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffff) > 0x7f800000)
    return 0x7fc0;
  bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}
float fromBf16(uint16_t half) {
  uint32_t bits = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}
uint16_t toF16(float value) {
  _Float16 half = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &half, 2);
  return bits;
}
float fromF16(uint16_t bits) {
  _Float16 half;
  std::memcpy(&half, &bits, 2);
  return static_cast<float>(half);
}

// ----- problem and reference -----
struct Problem {
  std::string normalizer = "softmax"; // softmax, sigmoid, relu
  double parameter = NAN;             // sigmoid bias / relu scale; NaN: the default
  bool causal = false;
  int64_t window = -1;
  int64_t batch = 2, heads = 4, kvHeads = 2, queries = 197, keys = 181, dim = 64;
  bool bf16 = true;
  double scale() const { return 1.0 / std::sqrt(static_cast<double>(dim)); }
  bool rowWise() const { return normalizer == "softmax"; }
  bool visible(int64_t i, int64_t j) const {
    if (causal && j > i)
      return false;
    if (window >= 0 && (j < i - window || (!causal && j > i + window)))
      return false;
    return true;
  }
};

using Tensor = std::vector<double>; // [B, H, S, D] row-major

struct Reference {
  Tensor out, lse, gradQuery, gradKey, gradValue;
};

Reference reference(const Problem &p, const Tensor &q, const Tensor &k, const Tensor &v,
                    const Tensor &gradOut) {
  int64_t B = p.batch, H = p.heads, G = p.heads / p.kvHeads, Sq = p.queries, Sk = p.keys,
          D = p.dim;
  Reference r;
  r.out.assign(B * H * Sq * D, 0);
  r.lse.assign(B * H * Sq, -INFINITY);
  r.gradQuery.assign(B * H * Sq * D, 0);
  r.gradKey.assign(B * p.kvHeads * Sk * D, 0);
  r.gradValue.assign(B * p.kvHeads * Sk * D, 0);
  double bias = std::isnan(p.parameter) ? -std::log(static_cast<double>(Sk)) : p.parameter;
  double reluScale = std::isnan(p.parameter) ? 1.0 / Sk : p.parameter;
  std::vector<double> s(Sk), prob(Sk), gradProb(Sk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t kh = h / G;
      const double *Q = &q[((b * H + h) * Sq) * D], *dO = &gradOut[((b * H + h) * Sq) * D];
      const double *K = &k[((b * p.kvHeads + kh) * Sk) * D];
      const double *V = &v[((b * p.kvHeads + kh) * Sk) * D];
      double *O = &r.out[((b * H + h) * Sq) * D], *dQ = &r.gradQuery[((b * H + h) * Sq) * D];
      double *dK = &r.gradKey[((b * p.kvHeads + kh) * Sk) * D];
      double *dV = &r.gradValue[((b * p.kvHeads + kh) * Sk) * D];
      for (int64_t i = 0; i < Sq; ++i) {
        double rowMax = -INFINITY;
        for (int64_t j = 0; j < Sk; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += Q[i * D + d] * K[j * D + d];
          s[j] = p.scale() * dot;
          if (p.visible(i, j))
            rowMax = std::max(rowMax, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < Sk; ++j) {
          double value = 0;
          if (p.visible(i, j)) {
            if (p.normalizer == "softmax")
              value = std::exp(s[j] - rowMax);
            else if (p.normalizer == "sigmoid")
              value = 1.0 / (1.0 + std::exp(-(s[j] + bias)));
            else
              value = std::max(s[j], 0.0) * reluScale;
          }
          prob[j] = value;
          sum += value;
        }
        if (p.rowWise()) {
          for (int64_t j = 0; j < Sk; ++j)
            prob[j] = sum > 0 ? prob[j] / sum : 0;
          r.lse[(b * H + h) * Sq + i] = sum > 0 ? (rowMax + std::log(sum)) / std::log(2.0)
                                                : -INFINITY;
        }
        double rowTerm = 0;
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j < Sk; ++j)
            o += prob[j] * V[j * D + d];
          O[i * D + d] = o;
          rowTerm += o * dO[i * D + d];
        }
        for (int64_t j = 0; j < Sk; ++j) {
          double dp = 0;
          for (int64_t d = 0; d < D; ++d)
            dp += dO[i * D + d] * V[j * D + d];
          double ds = 0;
          if (p.visible(i, j)) {
            if (p.normalizer == "softmax")
              ds = prob[j] * (dp - rowTerm);
            else if (p.normalizer == "sigmoid")
              ds = prob[j] * (1 - prob[j]) * dp;
            else
              ds = s[j] > 0 ? reluScale * dp : 0;
          }
          for (int64_t d = 0; d < D; ++d) {
            dQ[i * D + d] += p.scale() * ds * K[j * D + d];
            dK[j * D + d] += p.scale() * ds * Q[i * D + d];
            dV[j * D + d] += prob[j] * dO[i * D + d];
          }
        }
      }
    }
  return r;
}

/// Checks the reference's gradients against central finite differences of
/// L = sum(O * dO) on small problems: the GPU comparison is only as good as the reference.
int selfTest() {
  int failures = 0;
  std::mt19937_64 random(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const char *normalizer : {"softmax", "sigmoid", "relu"})
    for (bool causal : {false, true}) {
      Problem p;
      p.normalizer = normalizer;
      p.causal = causal;
      p.batch = 1, p.heads = 2, p.kvHeads = 1, p.queries = 5, p.keys = 7, p.dim = 4;
      auto fill = [&](int64_t heads, int64_t rows) {
        Tensor t(p.batch * heads * rows * p.dim);
        for (double &x : t)
          x = normal(random);
        return t;
      };
      Tensor q = fill(p.heads, p.queries), k = fill(p.kvHeads, p.keys),
             v = fill(p.kvHeads, p.keys), gradOut = fill(p.heads, p.queries);
      Reference r = reference(p, q, k, v, gradOut);
      auto loss = [&]() {
        Reference again = reference(p, q, k, v, gradOut);
        double sum = 0;
        for (size_t i = 0; i < again.out.size(); ++i)
          sum += again.out[i] * gradOut[i];
        return sum;
      };
      double worst = 0;
      for (auto [input, gradient] : {std::make_pair(&q, &r.gradQuery),
                                     std::make_pair(&k, &r.gradKey),
                                     std::make_pair(&v, &r.gradValue)})
        for (size_t i = 0; i < input->size(); ++i) {
          double saved = (*input)[i], step = 1e-6;
          (*input)[i] = saved + step;
          double up = loss();
          (*input)[i] = saved - step;
          double down = loss();
          (*input)[i] = saved;
          worst = std::max(worst, std::abs((up - down) / (2 * step) - (*gradient)[i]));
        }
      bool ok = worst < 1e-5;
      failures += !ok;
      std::printf("%-4s reference %s%s: max |finite difference - gradient| = %.2e\n",
                  ok ? "ok" : "FAIL", normalizer, causal ? " causal" : "", worst);
    }
  return failures ? 1 : 0;
}

// ----- launching -----
struct KernelInfo {
  std::string name, grid;
  int64_t blockRows = 0, threads = 0, sharedBytes = 0;
};

std::map<std::string, KernelInfo> parseContract(const std::string &ptx) {
  std::map<std::string, KernelInfo> kernels;
  std::istringstream lines(ptx);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("// attn.kernel ", 0) != 0)
      continue;
    std::istringstream words(line.substr(15));
    KernelInfo info;
    words >> info.name;
    std::string field;
    while (words >> field) {
      auto equals = field.find('=');
      std::string key = field.substr(0, equals), value = field.substr(equals + 1);
      if (key == "grid")
        info.grid = value;
      else if (key == "block_rows")
        info.blockRows = std::stoll(value);
      else if (key == "threads")
        info.threads = std::stoll(value);
      else if (key == "dynamic_shared_memory")
        info.sharedBytes = std::stoll(value);
    }
    for (const char *role : {"bwd_delta", "bwd_dkdv", "bwd_dq", "fwd"}) {
      std::string suffix = std::string("_") + role;
      if (info.name.size() > suffix.size() &&
          info.name.compare(info.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        kernels[role] = info;
        break;
      }
    }
  }
  return kernels;
}

/// A device buffer seen as a memref: MLIR's expanded descriptor (allocated and aligned
/// pointers, offset, sizes, strides).
struct DeviceTensor {
  CUdeviceptr pointer = 0;
  std::vector<int64_t> sizes;
  size_t elementBytes = 0;
  size_t count() const {
    size_t n = 1;
    for (int64_t size : sizes)
      n *= size;
    return n;
  }
};

class Arguments {
public:
  void add(const DeviceTensor &tensor) {
    int rank = static_cast<int>(tensor.sizes.size());
    std::vector<int64_t> strides(rank, 1);
    for (int i = rank - 2; i >= 0; --i)
      strides[i] = strides[i + 1] * tensor.sizes[i + 1];
    pointers_.push_back(tensor.pointer);
    pointers_.push_back(tensor.pointer);
    integers_.push_back(0);
    integers_.insert(integers_.end(), tensor.sizes.begin(), tensor.sizes.end());
    integers_.insert(integers_.end(), strides.begin(), strides.end());
    ranks_.push_back(rank);
  }
  std::vector<void *> addresses() {
    std::vector<void *> out;
    size_t pointer = 0, integer = 0;
    for (int rank : ranks_) {
      out.push_back(&pointers_[pointer++]);
      out.push_back(&pointers_[pointer++]);
      for (int i = 0; i < 1 + 2 * rank; ++i)
        out.push_back(&integers_[integer++]);
    }
    return out;
  }

private:
  std::vector<CUdeviceptr> pointers_;
  std::vector<int64_t> integers_;
  std::vector<int> ranks_;
};

double relativeError(const std::vector<double> &got, const std::vector<double> &want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i]) && got[i] == want[i])
      continue;
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

int run(int argc, char **argv) {
  Problem p;
  std::string ptxPath;
  double tolerance = 2e-2;
  if (argc == 2 && std::string(argv[1]) == "--self-test")
    return selfTest();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char *prefix) -> const char * {
      size_t n = std::strlen(prefix);
      return arg.compare(0, n, prefix) == 0 ? argv[i] + n : nullptr;
    };
    if (const char *v = value("--normalizer=")) {
      std::string spec = v;
      auto colon = spec.find(':');
      p.normalizer = spec.substr(0, colon);
      if (colon != std::string::npos)
        p.parameter = std::stod(spec.substr(colon + 1));
    } else if (arg == "--causal")
      p.causal = true;
    else if (const char *v = value("--window="))
      p.window = std::stoll(v);
    else if (const char *v = value("--head-dim="))
      p.dim = std::stoll(v);
    else if (const char *v = value("--dtype="))
      p.bf16 = std::string(v) == "bf16";
    else if (const char *v = value("--batch="))
      p.batch = std::stoll(v);
    else if (const char *v = value("--heads="))
      p.heads = std::stoll(v);
    else if (const char *v = value("--kv-heads="))
      p.kvHeads = std::stoll(v);
    else if (const char *v = value("--queries="))
      p.queries = std::stoll(v);
    else if (const char *v = value("--keys="))
      p.keys = std::stoll(v);
    else if (const char *v = value("--tolerance="))
      tolerance = std::stod(v);
    else if (arg[0] != '-')
      ptxPath = arg;
    else
      throw std::runtime_error("unknown argument " + arg);
  }
  if (ptxPath.empty())
    throw std::runtime_error("usage: attn-ptx-check FILE.ptx --normalizer=softmax|sigmoid[:b]|"
                             "relu[:s] --head-dim=D --dtype=bf16|f16 [--causal] [--window=W] "
                             "[--batch= --heads= --kv-heads= --queries= --keys=]");
  if (p.normalizer != "softmax" && p.normalizer != "sigmoid" && p.normalizer != "relu")
    throw std::runtime_error("unknown normalizer " + p.normalizer);
  std::ifstream file(ptxPath);
  if (!file)
    throw std::runtime_error("cannot read " + ptxPath);
  std::stringstream text;
  text << file.rdbuf();
  std::string ptx = text.str();
  auto kernels = parseContract(ptx);
  if (!kernels.count("fwd"))
    throw std::runtime_error(ptxPath + " has no `// attn.kernel ..._fwd` line (use attnc)");

  Cuda cuda{};
  if (!loadCuda(cuda)) {
    std::printf("attn-ptx-check: SKIPPED (no CUDA driver or device)\n");
    return kSkip;
  }
  CUdevice device;
  CUcontext context;
  cuda.check(cuda.deviceGet(&device, 0), "cuDeviceGet");
  cuda.check(cuda.primaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
  cuda.check(cuda.ctxSetCurrent(context), "cuCtxSetCurrent");
  CUmodule module;
  cuda.check(cuda.moduleLoadData(&module, ptx.c_str()), "cuModuleLoadData");

  // Inputs: random normal, rounded to the storage type; the reference reads the rounded values.
  std::mt19937_64 random(42);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto round16 = [&](double x) {
    return p.bf16 ? fromBf16(toBf16(static_cast<float>(x))) : fromF16(toF16(static_cast<float>(x)));
  };
  auto randomTensor = [&](int64_t heads, int64_t rows) {
    Tensor t(p.batch * heads * rows * p.dim);
    for (double &x : t)
      x = round16(normal(random));
    return t;
  };
  Tensor q = randomTensor(p.heads, p.queries), k = randomTensor(p.kvHeads, p.keys),
         v = randomTensor(p.kvHeads, p.keys), gradOut = randomTensor(p.heads, p.queries);
  Reference want = reference(p, q, k, v, gradOut);

  std::vector<CUdeviceptr> allocations;
  auto upload16 = [&](const Tensor &t, std::vector<int64_t> sizes) {
    DeviceTensor d{0, std::move(sizes), 2};
    std::vector<uint16_t> host(t.size());
    for (size_t i = 0; i < t.size(); ++i)
      host[i] = p.bf16 ? toBf16(static_cast<float>(t[i])) : toF16(static_cast<float>(t[i]));
    cuda.check(cuda.memAlloc(&d.pointer, host.size() * 2 + 16), "cuMemAlloc");
    allocations.push_back(d.pointer);
    cuda.check(cuda.memcpyHtoD(d.pointer, host.data(), host.size() * 2), "cuMemcpyHtoD");
    return d;
  };
  auto poisoned = [&](std::vector<int64_t> sizes, size_t elementBytes) {
    DeviceTensor d{0, std::move(sizes), elementBytes};
    cuda.check(cuda.memAlloc(&d.pointer, d.count() * elementBytes + 16), "cuMemAlloc");
    allocations.push_back(d.pointer);
    cuda.check(cuda.memsetD8(d.pointer, 0xff, d.count() * elementBytes), "cuMemsetD8"); // NaN
    return d;
  };
  auto download = [&](const DeviceTensor &d) {
    std::vector<double> out(d.count());
    if (d.elementBytes == 4) {
      std::vector<float> host(d.count());
      cuda.check(cuda.memcpyDtoH(host.data(), d.pointer, host.size() * 4), "cuMemcpyDtoH");
      for (size_t i = 0; i < host.size(); ++i)
        out[i] = host[i];
    } else {
      std::vector<uint16_t> host(d.count());
      cuda.check(cuda.memcpyDtoH(host.data(), d.pointer, host.size() * 2), "cuMemcpyDtoH");
      for (size_t i = 0; i < host.size(); ++i)
        out[i] = p.bf16 ? fromBf16(host[i]) : fromF16(host[i]);
    }
    return out;
  };
  auto launch = [&](const std::string &role, Arguments &arguments) {
    const KernelInfo &info = kernels.at(role);
    CUfunction function;
    cuda.check(cuda.moduleGetFunction(&function, module, info.name.c_str()),
               "cuModuleGetFunction");
    if (info.sharedBytes > 48 * 1024)
      cuda.check(cuda.funcSetAttribute(function, kMaxDynamicSharedAttribute,
                                       static_cast<int>(info.sharedBytes)),
                 "cuFuncSetAttribute");
    bool overKeys = info.grid.rfind("key", 0) == 0;
    int64_t rows = overKeys ? p.keys : p.queries, heads = overKeys ? p.kvHeads : p.heads;
    unsigned gridX = static_cast<unsigned>((rows + info.blockRows - 1) / info.blockRows);
    std::vector<void *> addresses = arguments.addresses();
    cuda.check(cuda.launchKernel(function, gridX, static_cast<unsigned>(heads),
                                 static_cast<unsigned>(p.batch),
                                 static_cast<unsigned>(info.threads), 1, 1,
                                 static_cast<unsigned>(info.sharedBytes), nullptr,
                                 addresses.data(), nullptr),
               ("cuLaunchKernel " + info.name).c_str());
    cuda.check(cuda.ctxSynchronize(), ("running " + info.name).c_str());
  };

  int64_t B = p.batch, H = p.heads, Hkv = p.kvHeads, Sq = p.queries, Sk = p.keys, D = p.dim;
  DeviceTensor dq = upload16(q, {B, H, Sq, D}), dk = upload16(k, {B, Hkv, Sk, D}),
               dv = upload16(v, {B, Hkv, Sk, D}), ddo = upload16(gradOut, {B, H, Sq, D});
  DeviceTensor out = poisoned({B, H, Sq, D}, 2), lse = poisoned({B, H, Sq}, 4);
  Arguments forward;
  for (const DeviceTensor *t : {&dq, &dk, &dv, &out, &lse})
    forward.add(*t);
  launch("fwd", forward);

  bool failed = false;
  auto report = [&](const char *what, double error) {
    bool ok = error < tolerance;
    failed |= !ok;
    std::printf("%-4s %-5s rel. error %.3e (tolerance %.0e)\n", ok ? "ok" : "FAIL", what,
                error, tolerance);
  };
  std::vector<double> gotOut = download(out);
  report("O", relativeError(gotOut, want.out));
  if (p.rowWise())
    report("LSE", relativeError(download(lse), want.lse));

  if (kernels.count("bwd_dq") && kernels.count("bwd_dkdv")) {
    // The backward reads O as the kernel wrote it (rounded), as a training step would.
    DeviceTensor delta = poisoned({B, H, Sq}, 4);
    if (p.rowWise()) {
      if (!kernels.count("bwd_delta"))
        throw std::runtime_error("row-wise normalizer but no _bwd_delta kernel");
      Arguments rowTerm;
      for (const DeviceTensor *t : {&out, &ddo, &delta})
        rowTerm.add(*t);
      launch("bwd_delta", rowTerm);
    }
    DeviceTensor gq = poisoned({B, H, Sq, D}, 2), gk = poisoned({B, Hkv, Sk, D}, 2),
                 gv = poisoned({B, Hkv, Sk, D}, 2);
    Arguments query;
    for (const DeviceTensor *t : {&dq, &dk, &dv, &ddo, &lse, &delta, &gq})
      query.add(*t);
    launch("bwd_dq", query);
    Arguments key;
    for (const DeviceTensor *t : {&dq, &dk, &dv, &ddo, &lse, &delta, &gk, &gv})
      key.add(*t);
    launch("bwd_dkdv", key);
    report("dQ", relativeError(download(gq), want.gradQuery));
    report("dK", relativeError(download(gk), want.gradKey));
    report("dV", relativeError(download(gv), want.gradValue));
  }
  for (CUdeviceptr pointer : allocations)
    cuda.memFree(pointer);
  return failed ? 1 : 0;
}
} // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception &error) {
    std::fprintf(stderr, "attn-ptx-check: error: %s\n", error.what());
    return 1;
  }
}
