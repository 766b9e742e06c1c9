// attnc: the attention compiler driver. Compiles an attn-dialect file, or a built-in variant
// named by flags, to any stage: attn (legalized), tiled (the flash kernels of --target: attn-tile's
// func.func kernels over memrefs for cpu, attn-tile-gpu's gpu.func kernels for sm_80/sm_90a),
// gpu (tensor-core gpu.func kernels), llvm (LLVM/NVVM dialect), ptx, cubin.
//
//   attnc FILE.mlir --target=sm_90a --emit=ptx -o k.ptx
//   attnc --variant=sigmoid --head-dim=128 --dtype=bf16 --causal --target=sm_90a --emit=ptx
//   attnc --variant=softmax --target=cpu --emit=llvm --mlir-print-ir-after-all --mlir-timing
//
// MLIR's standard options (--mlir-print-ir-{before,after}-all, --mlir-timing,
// --mlir-pass-statistics, --mlir-print-debuginfo, --mlir-disable-threading, ...) apply to every
// pass manager attnc runs, the in-process GPU compile's included.
//
// Every failure is a message on stderr and exit status 1.
#include "codegen/CpuPipeline.h"
#include "codegen/GpuCompiler.h"
#include "codegen/GpuPipeline.h"
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"
#include "runtime/VariantSource.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <string>

namespace cl = llvm::cl;
using namespace mlir;
using ::attn::codegen::GpuCompileError;

namespace {
cl::OptionCategory category("attnc options");
cl::opt<std::string> inputFile(cl::Positional, cl::desc("[input.mlir]"), cl::init(""),
                               cl::cat(category));
cl::opt<std::string> outputFile("o", cl::desc("output file ('-' for stdout)"),
                                cl::value_desc("file"), cl::init("-"), cl::cat(category));
cl::opt<std::string> target("target", cl::desc("cpu, sm_80 or sm_90a"), cl::init("sm_90a"),
                            cl::cat(category));
cl::opt<std::string> emit("emit", cl::desc("attn, tiled, gpu, llvm, ptx or cubin"),
                          cl::init("ptx"), cl::cat(category));
cl::opt<std::string> variant("variant",
                             cl::desc("build a variant instead of reading a file: any "
                                      "normalizer of the dialect by name, with parameters: "
                                      "softmax, sigmoid, sigmoid(bias=F), relu(scale=F), ..."),
                             cl::init(""), cl::cat(category));
cl::opt<int64_t> headDim("head-dim", cl::desc("head dim of a --variant"), cl::init(64),
                         cl::cat(category));
cl::opt<int64_t> valueHeadDim("value-head-dim",
                              cl::desc("value head dim of a --variant (default: head dim)"),
                              cl::init(0), cl::cat(category));
cl::opt<bool> causal("causal", cl::desc("causal mask (--variant)"), cl::init(false),
                     cl::cat(category));
cl::opt<double> scale("scale", cl::desc("score scale (--variant; default 1/sqrt(D))"),
                      cl::init(0.0), cl::cat(category));
cl::opt<std::string> dtype("dtype",
                           cl::desc("GPU storage type bf16 or f16 (default: the IR's 16-bit "
                                    "type, else bf16)"),
                           cl::init(""), cl::cat(category));
cl::opt<bool> backward("backward", cl::desc("also compile the backward kernels"),
                       cl::init(true), cl::cat(category));
cl::opt<bool> captureGradients(
    "capture-gradients",
    cl::desc("the backward also accumulates the gradients of the f32 captured tensors"),
    cl::init(false), cl::cat(category));
cl::opt<int64_t> warps("warps", cl::desc("override the tuning table: warps per CTA"),
                       cl::init(0), cl::cat(category));
cl::opt<int64_t> keyTile("key-tile", cl::desc("override the tuning table: keys per block"),
                         cl::init(0), cl::cat(category));
cl::opt<int64_t> stages("stages", cl::desc("override the tuning table: K/V pipeline stages"),
                        cl::init(0), cl::cat(category));
cl::opt<bool> wgmma("wgmma",
                    cl::desc("sm_90a: forward S = Q K^T on warpgroup MMAs (experimental)"),
                    cl::init(false), cl::cat(category));

/// A user-facing failure: printed as "attnc: error: <message>".
struct UsageError {
  std::string message;
};

enum class Stage { Attn, Tiled, Gpu, Llvm, Ptx, Cubin };

Stage parseStage(const std::string &name) {
  if (name == "attn")
    return Stage::Attn;
  if (name == "tiled")
    return Stage::Tiled;
  if (name == "gpu")
    return Stage::Gpu;
  if (name == "llvm")
    return Stage::Llvm;
  if (name == "ptx")
    return Stage::Ptx;
  if (name == "cubin")
    return Stage::Cubin;
  throw UsageError{"--emit=" + name + ": expected attn, tiled, gpu, llvm, ptx or cubin"};
}

/// Collects diagnostics so that failures print them once, with locations.
struct DiagnosticCollector {
  explicit DiagnosticCollector(MLIRContext &context)
      : stream(text), handler(&context, [this](Diagnostic &diagnostic) {
          stream << diagnostic.getLocation() << ": " << diagnostic << "\n";
          return success();
        }) {}
  std::string text;
  llvm::raw_string_ostream stream;
  ScopedDiagnosticHandler handler;
};

/// MLIR's command-line options on every pass manager attnc runs: IR printing, statistics,
/// crash reproducers (applyPassManagerCLOptions) and one timing report for the whole run
/// (--mlir-timing), printed when this is destroyed.
class PassManagerSetup {
public:
  PassManagerSetup() {
    applyDefaultTimingManagerCLOptions(timing_);
    root_ = timing_.getRootScope();
  }

  void configure(PassManager &pm) {
    if (failed(applyPassManagerCLOptions(pm)))
      throw UsageError{"the --mlir-* pass manager options cannot be applied"};
    pm.enableTiming(root_); // a no-op without --mlir-timing
  }

private:
  DefaultTimingManager timing_;
  TimingScope root_; ///< destroyed first: stops the root timer before the report
};

OwningOpRef<ModuleOp> loadModule(MLIRContext &context) {
  bool fromVariant = !variant.empty();
  if (fromVariant && !inputFile.empty())
    throw UsageError{"give either an input file or --variant, not both"};
  if (!fromVariant && inputFile.empty())
    throw UsageError{"no input: give an .mlir file (or '-') or --variant=<name>"};
  if (fromVariant) {
    ::attn::runtime::VariantSpec spec;
    spec.variant = variant;
    spec.headDim = headDim;
    spec.valueHeadDim = valueHeadDim > 0 ? valueHeadDim : headDim;
    spec.causal = causal;
    if (scale != 0.0)
      spec.scale = scale;
    try {
      return ::attn::runtime::buildVariantModule(spec, context);
    } catch (const ::attn::runtime::CompileError &error) {
      throw UsageError{error.what()};
    }
  }
  std::string errorMessage;
  auto file = openInputFile(inputFile, &errorMessage);
  if (!file)
    throw UsageError{errorMessage};
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  DiagnosticCollector diagnostics(context);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    throw UsageError{"'" + inputFile + "' does not parse or verify:\n" + diagnostics.text};
  return module;
}

void runPipeline(PassManagerSetup &setup, ModuleOp module,
                 llvm::function_ref<void(OpPassManager &)> build, const std::string &what) {
  DiagnosticCollector diagnostics(*module.getContext());
  PassManager pm(module.getContext());
  build(pm);
  setup.configure(pm);
  if (failed(pm.run(module)))
    throw UsageError{what + " failed:\n" + diagnostics.text};
}

int run() {
  Stage stage = parseStage(emit);
  bool cpu = target == "cpu";
  std::optional<::attn::codegen::GpuTarget> gpuTarget = ::attn::codegen::parseGpuTarget(target);
  if (!cpu && !gpuTarget)
    throw UsageError{"--target=" + target + ": expected cpu, sm_80 or sm_90a"};
  if (cpu && (stage == Stage::Gpu || stage == Stage::Ptx || stage == Stage::Cubin))
    throw UsageError{"--emit=" + emit + " needs a GPU target (--target=sm_80 or sm_90a)"};
  if (!dtype.empty() && dtype != "bf16" && dtype != "f16")
    throw UsageError{"--dtype=" + dtype + ": expected bf16 or f16"};
  if (headDim <= 0 || valueHeadDim < 0)
    throw UsageError{"head dims must be positive"};

  DialectRegistry registry;
  ::attn::codegen::registerGpuDialects(registry);
  ::attn::codegen::registerCpuDialects(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  OwningOpRef<ModuleOp> module = loadModule(context);
  {
    DiagnosticCollector diagnostics(context);
    if (failed(module->verify()))
      throw UsageError{"the IR does not verify:\n" + diagnostics.text};
  }

  PassManagerSetup setup;
  ::attn::codegen::GpuCompileOptions options;
  if (gpuTarget)
    options.target = *gpuTarget;
  options.dtype = dtype;
  options.backward = backward;
  options.captureGradients = captureGradients;
  options.configurePassManager = [&](PassManager &pm, const std::string &) { setup.configure(pm); };
  // The GPU stages' tiles: the tuning table's for this op and target, then the overrides.
  auto selectTiles = [&] {
    ::attn::codegen::GpuTileConfig tiles = ::attn::codegen::selectGpuTiles(*module, options);
    if (warps > 0)
      tiles.warps = warps;
    if (keyTile > 0)
      tiles.keyTile = keyTile;
    if (stages > 0)
      tiles.stages = stages;
    if (wgmma) {
      if (options.target != ::attn::codegen::GpuTarget::Sm90a)
        throw UsageError{"--wgmma needs --target=sm_90a"};
      tiles.wgmma = true;
    }
    return tiles;
  };

  std::string binary;
  bool isBinary = false;
  switch (stage) {
  case Stage::Attn:
    runPipeline(
        setup, *module,
        [](OpPassManager &pm) {
          pm.addPass(createCanonicalizerPass());
          pm.addPass(mlir::attn::createAttnLegalize());
        },
        "attn-legalize");
    break;
  case Stage::Tiled:
    if (cpu) {
      runPipeline(
          setup, *module,
          [&](OpPassManager &pm) {
            pm.addPass(createCanonicalizerPass());
            pm.addPass(mlir::attn::createAttnLegalize());
            if (backward) {
              mlir::attn::AttnDeriveBackwardOptions derive;
              derive.captureGradients = captureGradients;
              pm.addPass(mlir::attn::createAttnDeriveBackward(derive));
            }
            pm.addPass(mlir::attn::createAttnTile());
          },
          "tiling");
      break;
    }
    // A GPU target's tiled form is attn-tile-gpu's: the gpu.func kernels (as --emit=gpu).
    [[fallthrough]];
  case Stage::Gpu:
  case Stage::Llvm:
    if (cpu) {
      runPipeline(
          setup, *module, [](OpPassManager &pm) { ::attn::codegen::buildCpuPipeline(pm); },
          "the CPU pipeline");
      break;
    }
    [[fallthrough]];
  case Stage::Ptx:
  case Stage::Cubin: {
    ::attn::codegen::GpuTileConfig tiles = selectTiles();
    options.tiles = tiles;
    if (stage == Stage::Tiled || stage == Stage::Gpu || stage == Stage::Llvm) {
      runPipeline(
          setup, *module,
          [&](OpPassManager &pm) {
            ::attn::codegen::buildGpuKernelPipeline(pm, options, tiles);
            if (stage == Stage::Llvm)
              ::attn::codegen::buildGpuLoweringPipeline(pm, options.target);
          },
          stage == Stage::Llvm ? "the GPU pipeline" : "attn-tile-gpu");
      break;
    }
    ::attn::codegen::GpuProgram program = ::attn::codegen::compileModuleToPtx(*module, options);
    if (stage == Stage::Ptx) {
      // The launch contract rides along as PTX comments.
      for (const auto &kernel : program.kernels)
        binary += "// attn.kernel " + kernel.name + " grid=" + kernel.grid +
                  " block_rows=" + std::to_string(kernel.blockRows) +
                  " threads=" + std::to_string(kernel.threads) +
                  " dynamic_shared_memory=" + std::to_string(kernel.dynamicSharedBytes) + "\n";
      binary += program.ptx;
    } else {
      binary = ::attn::codegen::assembleCubin(program.ptx, options.target);
      isBinary = true;
    }
    break;
  }
  }

  std::string errorMessage;
  auto output = openOutputFile(outputFile, &errorMessage);
  if (!output)
    throw UsageError{errorMessage};
  if (!binary.empty() || isBinary)
    output->os() << binary;
  else
    module->print(output->os());
  output->keep();
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  registerAsmPrinterCLOptions();
  // --help lists attnc's options and MLIR's (those MLIR hides stay hidden).
  static cl::OptionCategory mlirCategory("MLIR options");
  for (auto &option : cl::getRegisteredOptions())
    if (option.first.starts_with("mlir-"))
      option.second->addCategory(mlirCategory);
  cl::HideUnrelatedOptions({&category, &mlirCategory});
  cl::ParseCommandLineOptions(argc, argv, "attnc: attention compiler\n");
  try {
    return run();
  } catch (const UsageError &error) {
    llvm::errs() << "attnc: error: " << error.message << "\n";
  } catch (const GpuCompileError &error) {
    llvm::errs() << "attnc: error: " << error.what() << "\n";
  } catch (const std::exception &error) {
    llvm::errs() << "attnc: error: " << error.what() << "\n";
  }
  return 1;
}
