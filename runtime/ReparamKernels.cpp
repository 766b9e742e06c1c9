// The σReparam JIT: spec -> attn.reparam_linear IR (canonicalized; its generic print is the
// key) -> runtime::Jit (memory, disk cache, compile) -> attn-lower-reparam-linear -> LLVM ->
// object -> ORC, with the host GEMM bound to the kernels' `attn_host_gemm_*` calls. The
// forward is compiled when the spec is first asked for, the backward on first use, as the
// attention kernels.
#include "runtime/ReparamKernels.h"
#include "runtime/ReparamHost.h"

#include "codegen/CpuPipeline.h"
#include "passes/Passes.h"
#include "runtime/CpuExecutor.h"
#include "runtime/CpuKernels.h"
#include "runtime/HostObject.h"
#include "runtime/Jit.h"
#include "runtime/Log.h"
#include "runtime/VariantSource.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace attn::runtime {
namespace {
std::atomic<HostGemm> installedGemm{nullptr};

/// The memref descriptors of MLIR's C interface.
template <typename T> struct Descriptor2 {
  T *allocated, *aligned;
  int64_t offset, sizes[2], strides[2];
};
template <typename T> struct Descriptor1 {
  T *allocated, *aligned;
  int64_t offset, sizes[1], strides[1];
};

template <typename T> Descriptor2<T> describe(const ReparamMatrix &m) {
  T *data = static_cast<T *>(m.data);
  // An empty matrix may come with any stride; the descriptor wants one the verifier accepts.
  return {data, data, 0, {m.rows, m.cols}, {m.rowStride > 0 ? m.rowStride : 1, 1}};
}
template <typename T> Descriptor1<T> describe(const ReparamVector &v) {
  T *data = static_cast<T *>(v.data);
  return {data, data, 0, {v.size}, {1}};
}
template <typename T> ReparamMatrix matrixOf(const Descriptor2<T> *d) {
  return {d->aligned + d->offset, d->sizes[0], d->sizes[1], d->strides[0]};
}

/// The first error the installed GEMM raised on this thread during a kernel call: exceptions
/// must not unwind through JIT-compiled frames, so the trampoline keeps it for the caller.
thread_local std::string gemmError;

template <typename T> ReparamDtype dtypeOf();
template <> ReparamDtype dtypeOf<float>() { return ReparamDtype::Float32; }
template <> ReparamDtype dtypeOf<double>() { return ReparamDtype::Float64; }

/// `_mlir_ciface_attn_host_gemm_<type>`, what the kernels call for each product.
template <typename T>
void hostGemmTrampoline(Descriptor2<T> *a, Descriptor2<T> *b, Descriptor1<T> *bias,
                        Descriptor2<T> *c, T alpha, int64_t flags) {
  if (!gemmError.empty())
    return;
  HostGemmCall call{dtypeOf<T>(),
                    matrixOf(a),
                    matrixOf(b),
                    {bias->aligned + bias->offset, bias->sizes[0]},
                    matrixOf(c),
                    static_cast<double>(alpha),
                    (flags & 1) != 0,
                    (flags & 2) != 0};
  try {
    installedGemm.load()(call);
  } catch (const std::exception &error) {
    gemmError = error.what();
  } catch (...) {
    gemmError = "the host GEMM failed";
  }
}

const std::vector<HostSymbol> &hostSymbols() {
  static const std::vector<HostSymbol> symbols = {
      {"_mlir_ciface_attn_host_gemm_f32", reinterpret_cast<void *>(&hostGemmTrampoline<float>)},
      {"_mlir_ciface_attn_host_gemm_f64", reinterpret_cast<void *>(&hostGemmTrampoline<double>)},
  };
  return symbols;
}

} // namespace

void throwIfGemmFailed(const char *what) {
  if (gemmError.empty())
    return;
  std::string message = std::string(what) + ": " + gemmError;
  gemmError.clear();
  throw std::runtime_error(message);
}
const std::vector<HostSymbol> &reparamGemmSymbols() { return hostSymbols(); }
bool hostGemmInstalled() { return installedGemm.load() != nullptr; }

/// f32 lanes of the host's vectors; ATTN_CPU_LANES forces 4, 8 or 16 as for attention.
int64_t reparamHostLanes() {
  if (const char *text = std::getenv("ATTN_CPU_LANES")) {
    const std::string forced(text);
    if (forced != "4" && forced != "8" && forced != "16")
      throw CompileError("ATTN_CPU_LANES must be 4, 8 or 16, got '" + forced + "'");
    return std::stol(forced);
  }
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  return features.lookup("avx512f") ? 16 : features.lookup("avx") ? 8 : 4;
}

namespace {

std::string describe(const ReparamSpec &spec) {
  return std::string("reparam_linear ") +
         (spec.dtype == ReparamDtype::Float64 ? "f64" : "f32") +
         (spec.bias ? " bias" : "") + (spec.training ? " training" : " eval");
}

/// The op as a function of its arguments, sizes dynamic (one kernel serves every shape).
std::string sourceText(const ReparamSpec &spec) {
  const std::string t = spec.dtype == ReparamDtype::Float64 ? "f64" : "f32";
  const std::string matrix = "tensor<?x?x" + t + ">", vector = "tensor<?x" + t + ">",
                    gamma = "tensor<1x" + t + ">";
  std::string text = "func.func @reparam_linear(%x: " + matrix + ", %w: " + matrix;
  if (spec.bias)
    text += ", %b: " + vector;
  text += ", %gamma: " + gamma + ", %u: " + vector + ") -> (" + matrix + ", " + vector +
          ") {\n  %y, %u_next = attn.reparam_linear %x, %w ";
  if (spec.bias)
    text += "bias(%b : " + vector + ") ";
  text += "gamma(%gamma : " + gamma + ") u(%u : " + vector + ")" +
          (spec.training ? " {training}" : "") + " : " + matrix + ", " + matrix + " -> " +
          matrix + ", " + vector + "\n  return %y, %u_next : " + matrix + ", " + vector +
          "\n}\n";
  return text;
}

struct ReparamSource {
  std::string canonicalIr, target, options, label;
  int64_t lanes = 16;
};

std::string compileKernel(const ReparamSource &source, const char *kernel,
                          const std::string &dumpFolder) {
  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  DiagnosticCollector diagnostics(context);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(source.canonicalIr, &context);
  if (!module)
    throw CompileError("re-reading the IR of " + source.label + " failed:\n" +
                       diagnostics.text());
  mlir::PassManager pm(&context);
  if (!dumpFolder.empty())
    pm.enableIRPrintingToFileTree([](mlir::Pass *, mlir::Operation *) { return false; },
                                  [](mlir::Pass *, mlir::Operation *) { return true; },
                                  /*printModuleScope=*/true, /*printAfterOnlyOnChange=*/true,
                                  /*printAfterOnlyOnFailure=*/false, dumpFolder + "/cpu-stages");
  mlir::attn::AttnLowerReparamLinearOptions options;
  options.vectorWidth = source.lanes;
  options.kernels = kernel;
  pm.addPass(mlir::attn::createAttnLowerReparamLinear(options));
  codegen::buildCpuLoweringPipeline(pm, /*canonicalizeLlvm=*/false);
  if (mlir::failed(pm.run(*module)) || mlir::failed(mlir::verify(*module)))
    throw CompileError("compiling " + source.label + " failed:\n" + diagnostics.text());
  return emitHostObject(*module, source.lanes * 32, source.label, dumpFolder);
}

std::shared_ptr<const LoadedCpuObject> obtainKernel(const ReparamSource &source,
                                                     const char *kernel) {
  ArtifactRequest request;
  request.canonicalIr = source.canonicalIr;
  request.target = source.target;
  request.options = source.options + " kernel=" + kernel;
  request.label = source.label + " " + kernel;
  std::string object = Jit::instance().artifact(request, [&](const std::string &dumpFolder) {
    return compileKernel(source, kernel, dumpFolder);
  });
  return loadCpuObject(object, request.label, hostSymbols());
}

template <typename T> struct Kernels {
  using Matrix = Descriptor2<T>;
  using Vector = Descriptor1<T>;
  using Forward = void (*)(Matrix *, Matrix *, Vector *, Vector *, Vector *, Matrix *, Vector *,
                           Vector *, Vector *);
  using ForwardNoBias = void (*)(Matrix *, Matrix *, Vector *, Vector *, Matrix *, Vector *,
                                 Vector *, Vector *);
  using Backward = void (*)(Matrix *, Matrix *, Matrix *, Vector *, Vector *, Vector *, Vector *,
                            Matrix *, Matrix *, Vector *, Vector *, bool);
  using BackwardNoBias = void (*)(Matrix *, Matrix *, Matrix *, Vector *, Vector *, Vector *,
                                  Vector *, Matrix *, Matrix *, Vector *, bool);

  static void forward(void *function, bool bias, const ReparamForwardArgs &a) {
    Matrix x = describe<T>(a.x), w = describe<T>(a.weight), y = describe<T>(a.y);
    Vector b = describe<T>(a.bias), gamma = describe<T>(a.gamma), u = describe<T>(a.u),
           v = describe<T>(a.v), uNext = describe<T>(a.uNext), scales = describe<T>(a.scales);
    if (bias)
      reinterpret_cast<Forward>(function)(&x, &w, &b, &gamma, &u, &y, &v, &uNext, &scales);
    else
      reinterpret_cast<ForwardNoBias>(function)(&x, &w, &gamma, &u, &y, &v, &uNext, &scales);
  }
  static void backward(void *function, bool bias, const ReparamBackwardArgs &a) {
    Matrix dy = describe<T>(a.gradY), x = describe<T>(a.x), w = describe<T>(a.weight),
           dx = describe<T>(a.gradX), dw = describe<T>(a.gradWeight);
    Vector gamma = describe<T>(a.gamma), v = describe<T>(a.v), uNext = describe<T>(a.uNext),
           scales = describe<T>(a.scales), db = describe<T>(a.gradBias),
           dgamma = describe<T>(a.gradGamma);
    if (bias)
      reinterpret_cast<Backward>(function)(&dy, &x, &w, &gamma, &v, &uNext, &scales, &dx, &dw,
                                           &db, &dgamma, a.computeGradX);
    else
      reinterpret_cast<BackwardNoBias>(function)(&dy, &x, &w, &gamma, &v, &uNext, &scales, &dx,
                                                 &dw, &dgamma, a.computeGradX);
  }
};

class JitReparamKernels final : public ReparamKernels {
public:
  JitReparamKernels(const ReparamSpec &spec, ReparamSource source)
      : spec_(spec), source_(std::move(source)) {}

  void forward(const ReparamForwardArgs &args) const override {
    std::call_once(forwardOnce_, [this] {
      auto start = std::chrono::steady_clock::now();
      forwardObject_ = obtainKernel(source_, "forward");
      forward_ = forwardObject_->lookup("_mlir_ciface_reparam_linear_fwd");
      compileMillis_ = std::chrono::duration<double, std::milli>(
                           std::chrono::steady_clock::now() - start)
                           .count();
      log(LogLevel::Debug, source_.label + ": forward kernel in " +
                               std::to_string(compileMillis_) + " ms");
    });
    if (spec_.dtype == ReparamDtype::Float64)
      Kernels<double>::forward(forward_, spec_.bias, args);
    else
      Kernels<float>::forward(forward_, spec_.bias, args);
    throwIfGemmFailed("attn reparam_linear");
  }
  void backward(const ReparamBackwardArgs &args) const override {
    std::call_once(backwardOnce_, [this] {
      backwardObject_ = obtainKernel(source_, "backward");
      backward_ = backwardObject_->lookup("_mlir_ciface_reparam_linear_bwd");
    });
    if (spec_.dtype == ReparamDtype::Float64)
      Kernels<double>::backward(backward_, spec_.bias, args);
    else
      Kernels<float>::backward(backward_, spec_.bias, args);
    throwIfGemmFailed("attn reparam_linear");
  }
  double compileMillis() const override { return compileMillis_; }

private:
  ReparamSpec spec_;
  ReparamSource source_;
  // Each kernel is compiled on its first call (an autograd backward asks for the backward
  // alone); call_once: a failed compile throws out of it and the next call tries again.
  mutable std::once_flag forwardOnce_;
  mutable double compileMillis_ = 0;
  mutable std::shared_ptr<const LoadedCpuObject> forwardObject_;
  mutable void *forward_ = nullptr;
  mutable std::once_flag backwardOnce_;
  mutable std::shared_ptr<const LoadedCpuObject> backwardObject_;
  mutable void *backward_ = nullptr;
};

std::shared_ptr<const ReparamKernels> build(const ReparamSpec &spec) {
  auto start = std::chrono::steady_clock::now();
  if (!installedGemm.load())
    throw CompileError("the σReparam kernels call the host GEMM, and none is installed "
                       "(runtime::setHostGemm; libattn_torch installs LibTorch's)");
  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  DiagnosticCollector diagnostics(context);
  ReparamSource source;
  source.label = describe(spec);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(sourceText(spec), &context);
  if (!module || mlir::failed(mlir::verify(*module)))
    throw CompileError("building the IR of " + source.label + " failed:\n" + diagnostics.text());
  mlir::PassManager canonicalize(&context);
  canonicalize.addPass(mlir::createCanonicalizerPass());
  if (mlir::failed(canonicalize.run(*module)))
    throw CompileError("canonicalizing " + source.label + " failed:\n" + diagnostics.text());
  llvm::raw_string_ostream text(source.canonicalIr);
  module->print(text, mlir::OpPrintingFlags().printGenericOpForm());
  source.target = hostTargetDescription();
  source.lanes = reparamHostLanes();
  source.options = "reparam cpu-object O3 pic lanes=" + std::to_string(source.lanes) +
                   " llvm=" + hostObjectLlvmPipeline();
  log(LogLevel::Debug,
      source.label + ": IR and key in " +
          std::to_string(std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - start)
                             .count()) +
          " ms");
  return std::make_shared<JitReparamKernels>(spec, std::move(source));
}
} // namespace

void setHostGemm(HostGemm gemm) { installedGemm.store(gemm); }

std::string ReparamSpec::cacheKey() const {
  std::string key = "reparam|";
  key += dtype == ReparamDtype::Float64 ? "f64|" : "f32|";
  key += bias ? "bias|" : "nobias|";
  key += training ? "training" : "eval";
  return key;
}

std::shared_ptr<const ReparamKernels> getReparamKernels(const ReparamSpec &spec) {
  static MemoryCache<ReparamKernels> &cache = *new MemoryCache<ReparamKernels>;
  return cache.getOrCreate(spec.cacheKey(), [&] { return build(spec); });
}
} // namespace attn::runtime
