// The CPU JIT: variant -> canonical attn IR -> (runtime::Jit: disk cache or compile) ->
// tiled kernels -> LLVM -> relocatable object -> loaded through ORC, once per process. Each
// of the three kernels is an artifact of its own: the forward is compiled when the variant is
// asked for, dQ and dK/dV (in parallel) when the backward is first used.
#include "runtime/CpuKernels.h"

#include "codegen/CpuPipeline.h"
#include "dialects/attn/AttnDialect.h"
#include "passes/KernelEmitter.h"
#include "runtime/CaptureBinder.h"
#include "runtime/CpuExecutor.h"
#include "runtime/HostObject.h"
#include "runtime/Jit.h"
#include "runtime/Log.h"
#include "runtime/TieredObject.h"
#include "runtime/VariantSource.h"

#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <future>
#include <mutex>
#include <sstream>
#include <utility>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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
/// `memref<?xi64>`: the kernels' kv_lengths argument.
struct D1 {
  const int64_t *allocated;
  const int64_t *aligned;
  int64_t offset;
  int64_t size;
  int64_t stride;
};
D1 describe(const KeyLengths &lengths) {
  return {lengths.data, lengths.data, 0, lengths.size, 1};
}
/// `memref<?x?x?x?xi8>`: the kernels' block map argument.
struct DMap {
  int8_t *allocated;
  int8_t *aligned;
  int64_t offset;
  int64_t sizes[4];
  int64_t strides[4];
};
DMap describe(const BlockMap *map) {
  // Without a map, an empty one: every index is outside it, so each block is classified.
  static int8_t nothing = 3;
  if (!map || !map->data)
    return {&nothing, &nothing, 0, {0, 0, 0, 0}, {0, 0, 0, 1}};
  DMap descriptor{map->data, map->data, 0, {}, {}};
  int64_t stride = 1;
  for (int d = 3; d >= 0; --d) {
    descriptor.sizes[d] = map->sizes[d];
    descriptor.strides[d] = stride;
    stride *= std::max<int64_t>(map->sizes[d], 1);
  }
  return descriptor;
}

/// What a variant's block map depends on, from its canonical IR.
BlockMapLayout blockMapLayoutOf(mlir::ModuleOp module, const std::vector<size_t> &callIndex) {
  BlockMapLayout layout;
  module.walk([&](mlir::attn::AttentionOp op) {
    if (op.getMask().empty())
      return;
    layout.present = true;
    std::tie(layout.perBatch, layout.perHead) =
        mlir::attn::KernelEmitter::blockMapDependence(op);
    mlir::Block &mask = op.getMask().front();
    for (size_t position = 0; position < callIndex.size(); ++position)
      if (!mask.getArgument(4 + position).use_empty())
        layout.maskCaptures.push_back(callIndex[position]);
  });
  return layout;
}

// ---- One call for every kernel signature.
// A kernel's C interface takes its memref arguments as pointers to their descriptors, then
// (batch, head, start) as int64: views, [kv_lengths], [captures..., fault]. Pointers and
// int64s are INTEGER-class arguments on x86-64 SysV and AArch64 alike, so a kernel is called
// through `void (*)(void *, ..., void *, int64_t, int64_t, int64_t)` with as many pointers as
// it takes; callKernel picks that type from a table by the count (up to kMaxKernelPointers).
using KernelCall = void (*)(void *function, void *const *pointers, int64_t batch, int64_t head,
                            int64_t start);

template <size_t Index> using PointerArgument = void *;

template <size_t... Indices>
void callWithPointers(void *function, void *const *pointers, int64_t batch, int64_t head,
                      int64_t start, std::index_sequence<Indices...>) {
  using Function = void (*)(PointerArgument<Indices>..., int64_t, int64_t, int64_t);
  reinterpret_cast<Function>(function)(pointers[Indices]..., batch, head, start);
}

template <size_t Count>
void callWith(void *function, void *const *pointers, int64_t batch, int64_t head,
              int64_t start) {
  callWithPointers(function, pointers, batch, head, start, std::make_index_sequence<Count>{});
}

template <size_t... Counts>
constexpr std::array<KernelCall, sizeof...(Counts)> callTable(std::index_sequence<Counts...>) {
  return {&callWith<Counts>...};
}

constexpr std::array<KernelCall, kMaxKernelPointers + 1> kKernelCalls =
    callTable(std::make_index_sequence<kMaxKernelPointers + 1>{});

/// The pointer arguments of one kernel call, on the stack (no allocation per tile).
struct KernelArguments {
  void *pointers[kMaxKernelPointers];
  size_t count = 0;
  void add(void *pointer) { pointers[count++] = pointer; } // bounded by build()'s check
  void call(void *function, int64_t batch, int64_t head, int64_t start) const {
    kKernelCalls[count](function, pointers, batch, head, start);
  }
};

/// The fixed views of the three kernels: forward q, k, v, o, lse; dQ adds dO, delta, dQ; dK/dV
/// dO, delta, dK, dV. The most pointer arguments a variant's kernels take is dK/dV's.
constexpr int64_t kMostViews = 8;

// Rows per query tile and keys per key/value block. Measured on AVX-512 (one thread, S=2048,
// B=1, H=2, D=64 and 128; min of 4 x 25 runs of 64x64, 64x128 and 128x128): 128 x 128 was
// fastest for softmax and relu (softmax D=64: 14.6 ms vs 17.0 ms at 64 x 64), since a
// 128-row tile amortizes packing each key block over more rows and 128-key blocks amortize
// the online softmax's per-row work. ATTN_CPU_TILES=QxK overrides them (tuning).
// With the products on AMX (bfloat16 inputs) the vector work per key block (loading and
// packing K and V, the normalizer) dominates, and 256-row query tiles amortize it better
// (one thread, S=4096, B=1, H=2, D=64, softmax bf16: forward 40.4 ms vs 47.0 ms at 128 x 128,
// forward + backward 152 ms vs 167 ms; S=1024: 2.5 vs 2.7 and 9.9 vs 11.1 ms).
constexpr int64_t kQueryTile = 128;
constexpr int64_t kKeyTile = 128;
constexpr int64_t kAmxQueryTile = 256;

std::optional<std::pair<int64_t, int64_t>> cpuTileOverride() {
  static const std::optional<std::pair<int64_t, int64_t>> tiles = [] {
    std::optional<std::pair<int64_t, int64_t>> sizes;
    if (const char *text = std::getenv("ATTN_CPU_TILES")) {
      long query = 0, key = 0;
      char end = 0;
      if (std::sscanf(text, "%ldx%ld%c", &query, &key, &end) != 2 || query < 1 || key < 1 ||
          query > 512 || key > 1024)
        throw CompileError(std::string("ATTN_CPU_TILES must be QUERYxKEY (1..512 x 1..1024), "
                                       "got '") + text + "'");
      sizes = {query, key};
    }
    return sizes;
  }();
  return tiles;
}

void writeFile(const std::string &path, llvm::function_ref<void(llvm::raw_ostream &)> write) {
  std::error_code error;
  llvm::raw_fd_ostream file(path, error, llvm::sys::fs::OF_Text);
  if (!error)
    write(file);
}

/// Asks Linux once for the AMX tile state (XTILEDATA), which a process must do before its
/// first AMX instruction; false where the kernel refuses or is not Linux on x86-64.
bool amxPermitted() {
#if defined(__linux__) && defined(__x86_64__)
  static const bool permitted = [] {
    constexpr long kRequestXcompPermission = 0x1023, kXfeatureXtiledata = 18;
    return ::syscall(SYS_arch_prctl, kRequestXcompPermission, kXfeatureXtiledata) == 0;
  }();
  return permitted;
#else
  return false;
#endif
}

/// How the products of bfloat16 inputs run. AMX tiles where the host has AMX-BF16 (measured
/// 3.2 TFLOP/s bf16 per Sapphire Rapids core against 0.22 for f32 FMAs); otherwise f32 FMAs,
/// since the AVX512-BF16 dot products measured half the FMA rate on that core
/// (ATTN_CPU_BF16_PRODUCTS=avx512 selects them on hosts where they pay).
const char *bf16ProductsFor(const llvm::StringMap<bool> &features) {
  const bool hasAmx = features.lookup("amx-bf16") && features.lookup("amx-tile");
  if (const char *text = std::getenv("ATTN_CPU_BF16_PRODUCTS")) {
    const std::string forced(text);
    if (forced == "none")
      return "none";
    if (forced == "avx512") {
      if (!features.lookup("avx512bf16"))
        throw CompileError("ATTN_CPU_BF16_PRODUCTS=avx512 needs a CPU with AVX512-BF16");
      return "avx512";
    }
    if (forced == "amx") {
      if (!hasAmx || !amxPermitted())
        throw CompileError("ATTN_CPU_BF16_PRODUCTS=amx needs a CPU with AMX-BF16 and the "
                           "kernel's permission for its tile state");
      return "amx";
    }
    throw CompileError("ATTN_CPU_BF16_PRODUCTS must be none, avx512 or amx, got '" + forced +
                       "'");
  }
  return hasAmx && amxPermitted() ? "amx" : "none";
}

/// The host's vector unit, from the CPU features the JIT compiles for, and the tile sizes the
/// launches use.
codegen::CpuKernelOptions hostKernelOptions(bool bfloat16Inputs) {
  codegen::CpuKernelOptions options;
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  // The 16-lane kernels' exp2 and sigmoid use AVX512DQ's vreduceps (attn-cpu-fast-math):
  // AVX512F without DQ (Xeon Phi) takes the AVX2 kernels.
  long lanes = features.lookup("avx512f") && features.lookup("avx512dq") ? 16
               : features.lookup("avx")                                 ? 8
                                                                        : 4;
  // ATTN_CPU_LANES=8 builds the AVX2 kernels on an AVX-512 host (the tests run both).
  if (const char *text = std::getenv("ATTN_CPU_LANES")) {
    std::string forced(text);
    if (forced != "4" && forced != "8" && forced != "16")
      throw CompileError("ATTN_CPU_LANES must be 4, 8 or 16, got '" + forced + "'");
    lanes = std::stol(forced);
    if (lanes == 16 && !(features.lookup("avx512f") && features.lookup("avx512dq")))
      throw CompileError("ATTN_CPU_LANES=16 needs a CPU with AVX512F and AVX512DQ");
  }
  options.lanes = lanes;
  options.registers = lanes == 16 ? 32 : 16;
  options.bf16Products = bfloat16Inputs && lanes == 16 ? bf16ProductsFor(features) : "none";
  const std::pair<int64_t, int64_t> tiles = cpuTileOverride().value_or(
      std::pair<int64_t, int64_t>{std::string(options.bf16Products) == "amx" ? kAmxQueryTile
                                                                               : kQueryTile,
                                  kKeyTile});
  options.queryTile = tiles.first;
  options.keyTile = tiles.second;
  options.canonicalizeLlvm = false;
  return options;
}

using codegen::CpuKernelSet;

/// attn IR (canonical) -> one tiled kernel -> LLVM dialect -> optimized LLVM IR -> ELF object.
/// `tiered`: the object is the quick tier's, with a job that generates the optimized one
/// from the same LLVM IR (runtime/TieredObject.h).
TieredCompile compileObject(mlir::ModuleOp module, codegen::CpuKernelOptions kernelOptions,
                            CpuKernelSet kernel, const std::string &label,
                            const std::string &dumpFolder, bool tiered) {
  mlir::MLIRContext &context = *module.getContext();
  DiagnosticCollector diagnostics(context);
  mlir::PassManager pm(&context);
  if (!dumpFolder.empty())
    pm.enableIRPrintingToFileTree([](mlir::Pass *, mlir::Operation *) { return false; },
                                  [](mlir::Pass *, mlir::Operation *) { return true; },
                                  /*printModuleScope=*/true,
                                  /*printAfterOnlyOnChange=*/true,
                                  /*printAfterOnlyOnFailure=*/false, dumpFolder + "/cpu-stages");
  else
    // Verifying the whole module after each of the ~20 passes was a third of the MLIR time;
    // it is verified once at the end instead (and after every pass when dumping).
    pm.enableVerifier(false);
  kernelOptions.kernels = kernel;
  codegen::buildCpuPipeline(pm, kernelOptions);
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  if (mlir::failed(pm.run(module)) || mlir::failed(mlir::verify(module)))
    throw CompileError("compiling attention " + label + " failed:\n" + diagnostics.text());
  char millis[32];
  std::snprintf(millis, sizeof millis, "%.1f",
                std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  std::string phases = std::string("MLIR passes ") + millis + " ms";
  TieredCompile compiled;
  BackgroundCompiles::instance().warmUpCodeGeneration();
  try {
    // The kernels' vectors are sized to the host's registers: LLVM must not split 512-bit
    // vectors on CPUs it tunes for 256-bit ones.
    std::shared_ptr<HostModule> host = translateHostModule(
        module, kernelOptions.lanes * 32, "attention " + label, dumpFolder, &phases);
    compiled.bytes = emitHostCode(*host, tiered ? CodeTier::Quick : CodeTier::Optimized, &phases);
    if (tiered)
      compiled.optimize = [host] { return emitHostCode(*host, CodeTier::Optimized); };
  } catch (const CompileError &error) {
    throw CompileError(std::string(error.what()) + ":\n" + diagnostics.text());
  }
  log(LogLevel::Debug, label + ": " + phases);
  return compiled;
}

std::string describe(const VariantSpec &spec) {
  std::ostringstream label;
  label << "variant '"
        << (spec.variant.size() > 60 ? spec.variant.substr(0, 60) + "..." : spec.variant)
        << "' D=" << spec.headDim << " Dv=" << spec.valueHeadDim << (spec.causal ? " causal" : "")
        << (spec.keyLengths ? " kv_lengths" : "");
  if (!spec.captures.empty())
    label << " captures=" << spec.captures.size();
  return label.str();
}

/// Everything one variant's kernels are compiled from; kept by the loaded kernels so that the
/// backward can be compiled when it is first asked for.
struct KernelSource {
  std::string canonicalIr; ///< generic print of the canonical attn IR (the key text)
  std::string target;
  std::string options; ///< pipeline options, without the kernel
  std::string label;
  /// What the kernels are compiled for, decided once per variant: the key's `options` text
  /// and every kernel's compile (the backward's, later, too) come from it.
  codegen::CpuKernelOptions kernelOptions;
};

/// The artifact of one kernel: from the disk cache, or compiled from `module` (parsed from
/// the canonical IR when null, in a context of this call's own: backward kernels compile on
/// two threads at once). Compiled, it is the quick tier until the optimized object, made on
/// the background compile thread, replaces it (JitConfig::tiered).
std::shared_ptr<TieredKernel> obtainKernel(const KernelSource &source, CpuKernelSet kernel,
                                           mlir::ModuleOp module = nullptr) {
  const std::string suffix = codegen::cpuKernelSuffix(kernel);
  ArtifactRequest request;
  request.canonicalIr = source.canonicalIr;
  request.target = source.target;
  request.options = source.options + " kernel=" + suffix.substr(1);
  request.label = source.label + " " + suffix.substr(1);
  const bool tiered = Jit::instance().config().tiered;
  auto compile = [&](const std::string &dumpFolder) {
    if (module) {
      if (!dumpFolder.empty())
        writeFile(dumpFolder + "/attn-canonical.mlir",
                  [&](llvm::raw_ostream &os) { module.print(os); });
      return compileObject(module, source.kernelOptions, kernel, request.label, dumpFolder,
                           tiered);
    }
    mlir::DialectRegistry registry;
    codegen::registerCpuDialects(registry);
    mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
    DiagnosticCollector diagnostics(context);
    mlir::OwningOpRef<mlir::ModuleOp> parsed =
        mlir::parseSourceString<mlir::ModuleOp>(source.canonicalIr, &context);
    if (!parsed)
      throw CompileError("re-reading the canonical IR of " + source.label + " failed:\n" +
                         diagnostics.text());
    if (!dumpFolder.empty())
      writeFile(dumpFolder + "/attn-canonical.mlir",
                [&](llvm::raw_ostream &os) { parsed->print(os); });
    return compileObject(*parsed, source.kernelOptions, kernel, request.label, dumpFolder,
                         tiered);
  };
  // The optimized object may be ready before the quick one is loaded: its loader waits for
  // the kernel made below (or for nothing, when loading failed).
  auto made = std::make_shared<std::promise<std::shared_ptr<TieredKernel>>>();
  std::shared_future<std::shared_ptr<TieredKernel>> kernelMade = made->get_future().share();
  bool final = true;
  std::string object = Jit::instance().tieredArtifact(
      request, compile,
      [kernelMade, label = request.label](const std::string &bytes) {
        if (std::shared_ptr<TieredKernel> loaded = kernelMade.get())
          loaded->replace(loadCpuObject(bytes, label + " (optimized)"));
      },
      final);
  std::shared_ptr<TieredKernel> loaded;
  try {
    loaded = std::make_shared<TieredKernel>(loadCpuObject(object, request.label),
                                            std::string("_mlir_ciface_attention") + suffix,
                                            final);
  } catch (...) {
    made->set_value(nullptr);
    throw;
  }
  made->set_value(loaded);
  return loaded;
}

double millisBetween(std::chrono::steady_clock::time_point from,
                     std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

/// The backward kernels, being obtained on two threads of their own beside the forward
/// (JitConfig::speculateBackward): from the disk cache, or compiled, so that a training step's
/// backward finds them ready (at a lower priority than the forward when the caller may not
/// need them: the forward is then not slowed down by them). Destroying it waits for both.
struct SpeculativeBackward {
  std::future<std::shared_ptr<TieredKernel>> query, key;

  /// `niceIncrement`: how much lower than the caller's the threads' priority is.
  static std::unique_ptr<SpeculativeBackward> start(const KernelSource &source,
                                                    int niceIncrement) {
    auto shared = std::make_shared<const KernelSource>(source);
    // Counted from before the threads start until each has finished, so that an exit right
    // after the forward waits for them rather than destroying LLVM's statics under a thread
    // that has not reached its compile yet (a SEGFAULT at exit; runtime/TieredObject.h).
    using Token = std::shared_ptr<BackgroundCompiles::Speculation>;
    auto token = std::make_shared<BackgroundCompiles::Speculation>();
    auto obtain = [shared, niceIncrement](CpuKernelSet kernel, Token held) {
      if (niceIncrement > 0)
        lowerThreadPriority(niceIncrement);
      std::shared_ptr<TieredKernel> obtained = obtainKernel(*shared, kernel);
      held.reset();
      return obtained;
    };
    auto started = std::make_unique<SpeculativeBackward>();
    started->key = std::async(std::launch::async, obtain, CpuKernelSet::KeyGrad, token);
    started->query = std::async(std::launch::async, obtain, CpuKernelSet::QueryGrad, token);
    return started;
  }
};

class JitCpuKernels final : public CpuKernels {
public:
  JitCpuKernels(std::shared_ptr<TieredKernel> forward, KernelSource source,
                bool rowWise, bool keyLengths, VariantCaptures captures, BlockMapLayout map,
                double millis)
      : forward_(std::move(forward)), source_(std::move(source)), rowWise_(rowWise),
        keyLengths_(keyLengths), captures_(std::move(captures)), mapLayout_(std::move(map)),
        compileMillis_(millis) {}

  const BlockMapLayout &blockMapLayout() const override { return mapLayout_; }

  int64_t queryTile() const override { return source_.kernelOptions.queryTile; }
  int64_t keyTile() const override { return source_.kernelOptions.keyTile; }
  bool rowWise() const override { return rowWise_; }
  double compileMillis() const override { return compileMillis_; }
  void prepareBackward() const override { backward(); }
  /// The backward kernels' speculative compile, started beside the forward's.
  void adoptSpeculation(std::unique_ptr<SpeculativeBackward> speculative) {
    std::lock_guard<std::mutex> lock(backwardMutex_);
    speculative_ = std::move(speculative);
  }

  const std::vector<CaptureDeclaration> &captures() const override {
    return captures_.declarations;
  }

  CaptureArguments bindCaptures(const std::vector<CaptureView> &views) const override {
    return CaptureBinder::bind(captures_.declarations, captures_.callIndex, views,
                               source_.label);
  }

  CaptureArguments bindCaptureGradients(const std::vector<CaptureView> &gradients) const override {
    return CaptureBinder::bindGradients(captures_.declarations, captures_.callIndex, gradients,
                                        source_.label);
  }

  void checkCaptureFaults(const CaptureArguments &captures) const override {
    CaptureBinder::checkFaults(captures_.declarations, captures);
  }

  void forwardTile(const View4 &q, const View4 &k, const View4 &v, const View4 &o, const View3 &lse,
                   int64_t batch, int64_t head, int64_t queryStart, const KeyLengths &lengths,
                   const CaptureArguments *captures, const BlockMap *map) const override {
    D4 dq = describe(q), dk = describe(k), dv = describe(v), dout = describe(o);
    D3 dlse = describe(lse);
    KernelArguments arguments;
    for (void *view : {(void *)&dq, (void *)&dk, (void *)&dv, (void *)&dout, (void *)&dlse})
      arguments.add(view);
    D1 dlengths;
    addExtras(arguments, lengths, dlengths, captures, batch);
    DMap dmap = describe(map);
    addMap(arguments, dmap);
    arguments.call(forward_, batch, head, queryStart);
  }

  void backwardQueryTile(const View4 &q, const View4 &k, const View4 &v, const View4 &gradOut,
                         const View3 &lse, const View3 &delta, const View4 &gradQuery,
                         int64_t batch, int64_t head, int64_t queryStart,
                         const KeyLengths &lengths, const CaptureArguments *captures,
                         const CaptureArguments *captureGradients,
                         const BlockMap *map) const override {
    D4 dq = describe(q), dk = describe(k), dv = describe(v), ddo = describe(gradOut),
       dgq = describe(gradQuery);
    D3 dlse = describe(lse), ddelta = describe(delta);
    KernelArguments arguments;
    for (void *view : {(void *)&dq, (void *)&dk, (void *)&dv, (void *)&ddo, (void *)&dlse,
                       (void *)&ddelta, (void *)&dgq})
      arguments.add(view);
    D1 dlengths;
    addExtras(arguments, lengths, dlengths, captures, batch);
    // The capture-gradient kernels take one gradient buffer per f32 capture after the faults.
    if (source_.kernelOptions.captureGradients != (captureGradients != nullptr))
      throw CallError(source_.label + (captureGradients
                                           ? ": capture gradients given to kernels compiled "
                                             "without them"
                                           : ": the kernels accumulate capture gradients and "
                                             "no buffers were given"));
    if (captureGradients)
      for (void *pointer : captureGradients->pointers())
        arguments.add(pointer);
    DMap dmap = describe(map);
    addMap(arguments, dmap);
    arguments.call(backward().queryGrad, batch, head, queryStart);
  }

  void backwardKeyTile(const View4 &q, const View4 &k, const View4 &v, const View4 &gradOut,
                       const View3 &lse, const View3 &delta, const View4 &gradKey,
                       const View4 &gradValue, int64_t batch, int64_t kvHead, int64_t keyStart,
                       const KeyLengths &lengths, const CaptureArguments *captures,
                       const BlockMap *map) const override {
    D4 dq = describe(q), dk = describe(k), dv = describe(v), ddo = describe(gradOut),
       dgk = describe(gradKey), dgv = describe(gradValue);
    D3 dlse = describe(lse), ddelta = describe(delta);
    KernelArguments arguments;
    for (void *view : {(void *)&dq, (void *)&dk, (void *)&dv, (void *)&ddo, (void *)&dlse,
                       (void *)&ddelta, (void *)&dgk, (void *)&dgv})
      arguments.add(view);
    D1 dlengths;
    addExtras(arguments, lengths, dlengths, captures, batch);
    DMap dmap = describe(map);
    addMap(arguments, dmap);
    arguments.call(backward().keyGrad, batch, kvHead, keyStart);
  }

private:
  /// The arguments after the views: key lengths (described into `dlengths`), then the
  /// captures and their fault flags. A call that disagrees with its variant is a caller bug
  /// that would read arguments from the wrong registers: an error, not a call.
  void addExtras(KernelArguments &arguments, const KeyLengths &lengths, D1 &dlengths,
                 const CaptureArguments *captures, int64_t batch) const {
    if (checkLengths(lengths, batch)) {
      dlengths = describe(lengths);
      arguments.add(&dlengths);
    }
    const size_t expected = captures_.callIndex.empty() ? 0 : captures_.callIndex.size() + 1;
    const size_t given = captures ? captures->pointers().size() : 0;
    if (given != expected)
      throw CallError(source_.label + ": the kernels take " +
                      std::to_string(captures_.callIndex.size()) +
                      " captured tensors; bind the call's captures (bindCaptures) and pass them "
                      "to every tile");
    for (size_t i = 0; i < given; ++i)
      arguments.add(captures->pointers()[i]);
  }

  /// The block map, last before the grid, for kernels of a variant with a mask region.
  void addMap(KernelArguments &arguments, DMap &dmap) const {
    if (mapLayout_.present)
      arguments.add(&dmap);
  }

  /// Whether the kernels take key lengths; a call that disagrees with its variant is a caller
  /// bug that would read arguments from the wrong registers.
  bool checkLengths(const KeyLengths &lengths, int64_t batch) const {
    const bool given = lengths.data != nullptr;
    if (given != keyLengths_)
      throw CompileError(source_.label + (keyLengths_ ? ": the kernels take key lengths and "
                                                        "none were given"
                                                      : ": key lengths given to kernels "
                                                        "compiled without them"));
    if (given && (batch < 0 || batch >= lengths.size))
      throw CompileError(source_.label + ": batch " + std::to_string(batch) +
                         " has no key length (" + std::to_string(lengths.size) + " given)");
    return given;
  }

  struct Backward {
    // Symbols (the current tier's code at each call), called with the variant's arguments.
    TieredSymbol queryGrad;
    TieredSymbol keyGrad;
  };

  /// The backward kernels, obtained on first use: dQ on this thread and dK/dV on another
  /// (each from the disk cache or the compiler), so that the two compile in parallel.
  const Backward &backward() const {
    if (const Backward *ready = backward_.load(std::memory_order_acquire))
      return *ready;
    std::lock_guard<std::mutex> lock(backwardMutex_);
    if (const Backward *ready = backward_.load(std::memory_order_relaxed))
      return *ready;
    auto start = std::chrono::steady_clock::now();
    auto made = std::make_unique<Backward>();
    if (std::unique_ptr<SpeculativeBackward> speculative = std::move(speculative_)) {
      // Started beside the forward; a failure is thrown here, and the next call retries.
      speculative->key.wait();
      made->queryGrad = TieredSymbol(speculative->query.get());
      made->keyGrad = TieredSymbol(speculative->key.get());
      backwardStorage_ = std::move(made);
      backward_.store(backwardStorage_.get(), std::memory_order_release);
      return *backwardStorage_;
    }
    std::future<std::shared_ptr<TieredKernel>> keyObject =
        std::async(std::launch::async, [this] {
          return obtainKernel(source_, CpuKernelSet::KeyGrad);
        });
    try {
      made->queryGrad = TieredSymbol(obtainKernel(source_, CpuKernelSet::QueryGrad));
    } catch (...) {
      keyObject.wait();
      throw;
    }
    made->keyGrad = TieredSymbol(keyObject.get());
    log(LogLevel::Debug, source_.label + ": backward kernels in " +
                             std::to_string(millisBetween(start, std::chrono::steady_clock::now())) +
                             " ms");
    backwardStorage_ = std::move(made);
    backward_.store(backwardStorage_.get(), std::memory_order_release);
    return *backwardStorage_;
  }

  TieredSymbol forward_; ///< the current tier's code at each call
  KernelSource source_;
  bool rowWise_;
  bool keyLengths_;
  VariantCaptures captures_;
  BlockMapLayout mapLayout_;
  double compileMillis_;
  mutable std::mutex backwardMutex_;
  mutable std::unique_ptr<SpeculativeBackward> speculative_;
  mutable std::unique_ptr<Backward> backwardStorage_;
  mutable std::atomic<const Backward *> backward_{nullptr};
};

std::shared_ptr<const CpuKernels> build(const VariantSpec &spec, BackwardUse backwardUse) {
  auto start = std::chrono::steady_clock::now();
  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);

  // The disk key hashes the canonical IR, so spellings of one variant share an entry.
  CanonicalVariant variant = buildCanonicalVariant(spec, context);
  size_t floatCaptures = 0;
  for (size_t index : variant.captures.callIndex)
    floatCaptures += variant.captures.declarations[index].element == CaptureElement::Float32;
  const size_t capturePointers =
      variant.captures.callIndex.empty() ? 0 : variant.captures.callIndex.size() + 1;
  // dK/dV has the most views; dQ one fewer, plus the gradient buffers with capture gradients.
  const BlockMapLayout mapLayout = blockMapLayoutOf(*variant.module, variant.captures.callIndex);
  const size_t pointers =
      (spec.keyLengths ? 1 : 0) + capturePointers + (mapLayout.present ? 1 : 0) +
      std::max<size_t>(kMostViews, kMostViews - 1 + (spec.captureGradients ? floatCaptures : 0));
  if (pointers > static_cast<size_t>(kMaxKernelPointers))
    throw CompileError(describe(spec) + ": " + std::to_string(variant.captures.callIndex.size()) +
                       " captured tensors are more than the CPU kernels take (their dK/dV "
                       "kernel would take " + std::to_string(pointers) + " memref arguments, "
                       "at most " + std::to_string(kMaxKernelPointers) + ")");
  KernelSource source;
  source.canonicalIr = std::move(variant.keyText);
  source.target = hostTargetDescription();
  std::ostringstream options;
  source.kernelOptions = hostKernelOptions(spec.bfloat16);
  source.kernelOptions.captureGradients = spec.captureGradients;
  const codegen::CpuKernelOptions &kernelOptions = source.kernelOptions;
  options << "cpu-object O3 pic tile-ir query-tile=" << kernelOptions.queryTile
          << " key-tile=" << kernelOptions.keyTile << " lanes=" << kernelOptions.lanes
          << " bf16-products=" << kernelOptions.bf16Products
          << (kernelOptions.captureGradients ? " capture-gradients" : "")
          << (kernelOptions.blockMap ? " block-map" : "") << " llvm=" << hostObjectLlvmPipeline();
  source.options = options.str();
  source.label = describe(spec);

  auto prepared = std::chrono::steady_clock::now();
  std::unique_ptr<SpeculativeBackward> speculative;
  // A caller that will run the backward (its inputs require grad) waits for all three kernels:
  // they share the cores evenly, which made forward + dQ + dK/dV callable ~10 ms sooner than
  // at nice +5 and the forward ~10 ms later (attn-bench-compile). One that will not gets no
  // speculative compiles at all; an unknown caller gets them behind the forward.
  if (Jit::instance().config().speculateBackward && backwardUse != BackwardUse::NotExpected)
    speculative = SpeculativeBackward::start(source,
                                             backwardUse == BackwardUse::Expected ? 0 : 5);
  std::shared_ptr<TieredKernel> forward =
      obtainKernel(source, CpuKernelSet::Forward, *variant.module);
  auto done = std::chrono::steady_clock::now();
  log(LogLevel::Debug, source.label + ": canonical IR and key " +
                           std::to_string(millisBetween(start, prepared)) +
                           " ms, forward kernel " + std::to_string(millisBetween(prepared, done)) +
                           " ms");
  auto kernels = std::make_shared<JitCpuKernels>(std::move(forward), std::move(source),
                                                 variant.rowWise, spec.keyLengths,
                                                 std::move(variant.captures), mapLayout,
                                                 millisBetween(start, done));
  if (speculative)
    kernels->adoptSpeculation(std::move(speculative));
  return kernels;
}
} // namespace

std::string VariantSpec::cacheKey() const {
  // Formed on every call (the memory-hit path): plain appends, no streams.
  std::string key = "cpu|";
  key.reserve(48 + variant.size());
  key += std::to_string(headDim);
  key += '|';
  key += std::to_string(valueHeadDim);
  key += causal ? "|causal|" : "|full|";
  key += bfloat16 ? "bf16|" : "";
  key += keyLengths ? "kv-lengths|" : "";
  key += captureGradients ? "capture-gradients|" : "";
  if (!captures.empty()) {
    // Each capture's element kind and rank: "captures:i2,f1|".
    key += "captures:";
    for (const CaptureSignature &capture : captures) {
      key += capture.floating ? 'f' : 'i';
      key += std::to_string(capture.rank);
      key += ',';
    }
    key += '|';
  }
  if (scale) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", *scale);
    key += text;
  }
  key += '|';
  key += variant;
  return key;
}

std::shared_ptr<const CpuKernels> getCpuKernels(const VariantSpec &spec,
                                                BackwardUse backwardUse) {
  static MemoryCache<CpuKernels> &cache = *new MemoryCache<CpuKernels>;
  return cache.getOrCreate(spec.cacheKey(), [&] { return build(spec, backwardUse); });
}
} // namespace attn::runtime
