// The CPU JIT: variant -> attn IR -> tiled kernels -> LLVM -> ORC JIT (ExecutionEngine),
// compiled once per key and kept for the life of the process.
#include "runtime/CpuKernels.h"

#include "codegen/CpuPipeline.h"
#include "dialects/attn/AttnDialect.h"
#include "runtime/VariantSource.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <future>
#include <mutex>
#include <sstream>
#include <unordered_map>

namespace attn::runtime {
namespace {
/// The memref descriptor of MLIR's C interface (`_mlir_ciface_*` functions).
template <int Rank> struct MemRefDescriptor {
  float *allocated;
  float *aligned;
  int64_t offset;
  int64_t sizes[Rank];
  int64_t strides[Rank];
};

template <int Rank> MemRefDescriptor<Rank> describe(const View<Rank> &view) {
  MemRefDescriptor<Rank> descriptor{view.data, view.data, 0, {}, {}};
  for (int i = 0; i < Rank; ++i) {
    descriptor.sizes[i] = view.sizes[i];
    descriptor.strides[i] = view.strides[i];
  }
  return descriptor;
}

using D4 = MemRefDescriptor<4>;
using D3 = MemRefDescriptor<3>;
using ForwardFn = void (*)(D4 *, D4 *, D4 *, D4 *, D3 *, int64_t, int64_t, int64_t);
using QueryGradFn = void (*)(D4 *, D4 *, D4 *, D4 *, D3 *, D3 *, D4 *, int64_t, int64_t,
                             int64_t);
using KeyGradFn = void (*)(D4 *, D4 *, D4 *, D4 *, D3 *, D3 *, D4 *, D4 *, int64_t, int64_t,
                           int64_t);

constexpr int64_t kQueryTile = 32;
constexpr int64_t kKeyTile = 64;

class JitCpuKernels final : public CpuKernels {
public:
  JitCpuKernels(std::unique_ptr<mlir::ExecutionEngine> engine, bool rowWise, double millis)
      : engine_(std::move(engine)), rowWise_(rowWise), compileMillis_(millis) {
    forward_ = reinterpret_cast<ForwardFn>(lookup("attention_fwd"));
    queryGrad_ = reinterpret_cast<QueryGradFn>(lookup("attention_bwd_dq"));
    keyGrad_ = reinterpret_cast<KeyGradFn>(lookup("attention_bwd_dkdv"));
  }

  int64_t queryTile() const override { return kQueryTile; }
  int64_t keyTile() const override { return kKeyTile; }
  bool rowWise() const override { return rowWise_; }
  double compileMillis() const override { return compileMillis_; }

  void forwardTile(const View4 &q, const View4 &k, const View4 &v, const View4 &o,
                   const View3 &lse, int64_t batch, int64_t head,
                   int64_t queryStart) const override {
    D4 dq = describe(q), dk = describe(k), dv = describe(v), dout = describe(o);
    D3 dlse = describe(lse);
    forward_(&dq, &dk, &dv, &dout, &dlse, batch, head, queryStart);
  }

  void backwardQueryTile(const View4 &q, const View4 &k, const View4 &v, const View4 &gradOut,
                         const View3 &lse, const View3 &delta, const View4 &gradQuery,
                         int64_t batch, int64_t head, int64_t queryStart) const override {
    D4 dq = describe(q), dk = describe(k), dv = describe(v), ddo = describe(gradOut),
       dgq = describe(gradQuery);
    D3 dlse = describe(lse), ddelta = describe(delta);
    queryGrad_(&dq, &dk, &dv, &ddo, &dlse, &ddelta, &dgq, batch, head, queryStart);
  }

  void backwardKeyTile(const View4 &q, const View4 &k, const View4 &v, const View4 &gradOut,
                       const View3 &lse, const View3 &delta, const View4 &gradKey,
                       const View4 &gradValue, int64_t batch, int64_t kvHead,
                       int64_t keyStart) const override {
    D4 dq = describe(q), dk = describe(k), dv = describe(v), ddo = describe(gradOut),
       dgk = describe(gradKey), dgv = describe(gradValue);
    D3 dlse = describe(lse), ddelta = describe(delta);
    keyGrad_(&dq, &dk, &dv, &ddo, &dlse, &ddelta, &dgk, &dgv, batch, kvHead, keyStart);
  }

private:
  void *lookup(const std::string &kernel) {
    auto address = engine_->lookup("_mlir_ciface_" + kernel);
    if (!address) {
      std::string message;
      llvm::raw_string_ostream os(message);
      os << llvm::toString(address.takeError());
      throw CompileError("JIT lookup of " + kernel + " failed: " + message);
    }
    return *address;
  }

  std::unique_ptr<mlir::ExecutionEngine> engine_;
  bool rowWise_;
  double compileMillis_;
  ForwardFn forward_ = nullptr;
  QueryGradFn queryGrad_ = nullptr;
  KeyGradFn keyGrad_ = nullptr;
};

std::shared_ptr<const CpuKernels> compile(const VariantSpec &spec) {
  auto start = std::chrono::steady_clock::now();
  static std::once_flag nativeTargetOnce;
  std::call_once(nativeTargetOnce, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });

  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();

  mlir::OwningOpRef<mlir::ModuleOp> module = buildVariantModule(spec, context);
  bool rowWise = false;
  module->walk([&](mlir::attn::AttentionOp op) { rowWise = op.getNormalizer().isRowWise(); });

  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream(diagnostics);
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diagnostic) {
    diagnosticStream << diagnostic.getLocation() << ": " << diagnostic << "\n";
    for (auto &note : diagnostic.getNotes())
      diagnosticStream << "  note: " << note << "\n";
    return mlir::success();
  });
  mlir::PassManager pm(&context);
  codegen::buildCpuPipeline(pm);
  if (mlir::failed(pm.run(*module)))
    throw CompileError("compiling attention variant '" + spec.variant.substr(0, 200) +
                       "' failed:\n" + diagnostics);

  auto hostBuilder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!hostBuilder)
    throw CompileError("cannot detect the host CPU: " + llvm::toString(hostBuilder.takeError()));
  auto targetMachine = hostBuilder->createTargetMachine();
  if (!targetMachine)
    throw CompileError("cannot create a target machine: " +
                       llvm::toString(targetMachine.takeError()));
  mlir::ExecutionEngineOptions options;
  options.transformer = mlir::makeOptimizingTransformer(3, 0, targetMachine->get());
  options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  auto engine = mlir::ExecutionEngine::create(*module, options);
  if (!engine)
    throw CompileError("JIT compilation failed: " + llvm::toString(engine.takeError()));
  double millis = std::chrono::duration<double, std::milli>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  return std::make_shared<JitCpuKernels>(std::move(*engine), rowWise, millis);
}
} // namespace

std::string VariantSpec::cacheKey() const {
  std::ostringstream key;
  key << "cpu|D=" << headDim << "|Dv=" << valueHeadDim << "|causal=" << causal << "|scale=";
  if (scale)
    key << *scale;
  key << "|" << variant;
  return key.str();
}

std::shared_ptr<const CpuKernels> getCpuKernels(const VariantSpec &spec) {
  using Entry = std::shared_future<std::shared_ptr<const CpuKernels>>;
  // Kernels live as long as the process. The cache is never destroyed: tearing JIT engines
  // down during static destruction races LLVM's own static teardown.
  static std::mutex &mutex = *new std::mutex;
  static auto &cache = *new std::unordered_map<std::string, Entry>;

  std::string key = spec.cacheKey();
  std::promise<std::shared_ptr<const CpuKernels>> promise;
  Entry entry;
  bool owner = false;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = cache.find(key);
    if (found != cache.end()) {
      entry = found->second;
    } else {
      entry = promise.get_future().share();
      cache.emplace(key, entry);
      owner = true;
    }
  }
  // The thread that inserted the entry compiles; the others wait on the same future.
  if (owner) {
    try {
      promise.set_value(compile(spec));
    } catch (...) {
      promise.set_exception(std::current_exception());
      // A failed variant is not kept: the waiting threads see the error, later calls retry.
      std::lock_guard<std::mutex> lock(mutex);
      cache.erase(key);
    }
  }
  return entry.get();
}
} // namespace attn::runtime
