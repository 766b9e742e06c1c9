#include "codegen/GpuPipeline.h"

#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <vector>

namespace attn::codegen {
using namespace mlir;

void buildGpuKernelPipeline(OpPassManager &pm, const GpuCompileOptions &options,
                            const GpuTileConfig &tiles) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(mlir::attn::createAttnLegalize());
  mlir::attn::AttnTileGpuOptions tileOptions;
  tileOptions.warps = tiles.warps;
  tileOptions.keyTile = tiles.keyTile;
  tileOptions.stages = tiles.stages;
  tileOptions.backwardWarps = tiles.backwardWarps;
  tileOptions.backwardKeyTile = tiles.backwardKeyTile;
  tileOptions.keyValueQueryTile = tiles.keyValueQueryTile;
  tileOptions.wgmma = tiles.wgmma && options.target == GpuTarget::Sm90a;
  tileOptions.elementType = options.dtype;
  tileOptions.backward = options.backward;
  tileOptions.captureGradients = options.backward && options.captureGradients;
  pm.addPass(mlir::attn::createAttnTileGpu(tileOptions));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void buildGpuLoweringPipeline(OpPassManager &pm, GpuTarget target) {
  // The device half of upstream's gpu-lower-to-nvvm-pipeline: our modules have no host code.
  pm.addPass(createConvertNVGPUToNVVMPass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertNVVMToLLVMPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  GpuNVVMAttachTargetOptions targetOptions;
  targetOptions.chip = gpuChip(target);
  targetOptions.features = gpuPtxFeatures(target);
  targetOptions.optLevel = 3;
  pm.addPass(createGpuNVVMAttachTarget(targetOptions));
  pm.addPass(createLowerAffinePass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertGpuOpsToNVVMOps());
  pm.addNestedPass<gpu::GPUModuleOp>(createCanonicalizerPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createCSEPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createReconcileUnrealizedCastsPass());
}

void buildGpuPtxPipeline(OpPassManager &pm, const std::string &libdevice) {
  GpuModuleToBinaryPassOptions binaryOptions;
  binaryOptions.compilationTarget = "isa";
  if (!libdevice.empty())
    binaryOptions.linkFiles.push_back(libdevice);
  pm.addPass(createGpuModuleToBinaryPass(binaryOptions));
}

std::optional<std::string> findLibdevice() {
  std::vector<std::string> roots;
  for (const char *variable : {"ATTN_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(variable))
      roots.push_back(root);
  roots.push_back("/usr/local/cuda");
  for (const std::string &root : roots) {
    std::string path = root + "/nvvm/libdevice/libdevice.10.bc";
    if (llvm::sys::fs::exists(path))
      return path;
  }
  return std::nullopt;
}

void registerGpuDialects(DialectRegistry &registry) {
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registry.insert<mlir::attn::AttnDialect>();
}

namespace {
struct GpuPipelineOptions : PassPipelineOptions<GpuPipelineOptions> {
  Option<int64_t> headDim{*this, "head-dim",
                          llvm::cl::desc("head dim that selects the tuning-table tiles"),
                          llvm::cl::init(128)};
  Option<std::string> elementType{*this, "element-type",
                                  llvm::cl::desc("bf16 or f16"), llvm::cl::init("bf16")};
  Option<bool> backward{*this, "backward", llvm::cl::desc("emit the dQ and dK/dV kernels"),
                        llvm::cl::init(true)};
};

void buildNamedPipeline(OpPassManager &pm, GpuTarget target,
                        const GpuPipelineOptions &pipelineOptions) {
  GpuCompileOptions options;
  options.target = target;
  options.dtype = pipelineOptions.elementType;
  options.backward = pipelineOptions.backward;
  GpuTileConfig tiles = lookupGpuTiles(target, pipelineOptions.headDim, pipelineOptions.headDim)
                            .value_or(GpuTileConfig{});
  buildGpuKernelPipeline(pm, options, tiles);
  buildGpuLoweringPipeline(pm, target);
  buildGpuPtxPipeline(pm, findLibdevice().value_or(""));
}

mlir::attn::AttentionOp findAttention(ModuleOp module) {
  mlir::attn::AttentionOp found;
  module.walk([&](mlir::attn::AttentionOp op) {
    if (!found)
      found = op;
  });
  return found;
}

int64_t integerAttr(Operation *op, StringRef name) {
  if (auto attr = op->getAttrOfType<IntegerAttr>(name))
    return attr.getInt();
  return 0;
}
} // namespace

void registerGpuPipelines() {
  PassPipelineRegistration<GpuPipelineOptions>(
      "attn-sm80-pipeline",
      "attn dialect to PTX for sm_80: legalize, attn-tile-gpu (mma.sync, cp.async), NVVM, "
      "gpu-module-to-binary{format=isa}",
      [](OpPassManager &pm, const GpuPipelineOptions &options) {
        buildNamedPipeline(pm, GpuTarget::Sm80, options);
      });
  PassPipelineRegistration<GpuPipelineOptions>(
      "attn-sm90a-pipeline",
      "attn dialect to PTX for sm_90a: legalize, attn-tile-gpu (mma.sync, cp.async), NVVM, "
      "gpu-module-to-binary{format=isa}",
      [](OpPassManager &pm, const GpuPipelineOptions &options) {
        buildNamedPipeline(pm, GpuTarget::Sm90a, options);
      });
}

GpuTileConfig selectGpuTiles(ModuleOp module, const GpuCompileOptions &options) {
  if (options.tiles)
    return *options.tiles;
  mlir::attn::AttentionOp op = findAttention(module);
  if (!op)
    throw GpuCompileError("the module holds no attn.attention op");
  auto tiles = lookupGpuTiles(options.target, op.getHeadDim(), op.getValueHeadDim());
  if (!tiles)
    throw GpuCompileError("unsupported head dims D = " + std::to_string(op.getHeadDim()) +
                          ", Dv = " + std::to_string(op.getValueHeadDim()) + " for " +
                          gpuChip(options.target) + ": " + supportedGpuHeadDims());
  // score_mod (and its derivative) keeps index math live per element: the dQ/dK/dV blocks
  // shrink so that the backward kernels stay spill-free.
  if (!op.getScoreMod().empty())
    tiles->backwardKeyTile = std::min<int64_t>(tiles->backwardKeyTile, 32);
  return *tiles;
}

GpuProgram compileModuleToPtx(ModuleOp module, const GpuCompileOptions &options) {
  auto start = std::chrono::steady_clock::now();
  if (!options.dtype.empty() && options.dtype != "bf16" && options.dtype != "f16")
    throw GpuCompileError("dtype must be bf16 or f16, got '" + options.dtype + "'");
  MLIRContext *context = module.getContext();
  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream(diagnostics);
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &diagnostic) {
    diagnosticStream << diagnostic.getLocation() << ": " << diagnostic << "\n";
    return success();
  });
  if (failed(module.verify()))
    throw GpuCompileError("attention IR does not verify:\n" + diagnostics);

  GpuProgram program;
  program.target = options.target;
  program.tiles = selectGpuTiles(module, options);
  program.rowWise = findAttention(module).getNormalizer().isRowWise();

  auto configure = [&](PassManager &pm, const char *stage) {
    if (options.configurePassManager)
      options.configurePassManager(pm, stage);
  };
  PassManager kernels(context);
  buildGpuKernelPipeline(kernels, options, program.tiles);
  configure(kernels, "kernels");
  if (failed(kernels.run(module)))
    throw GpuCompileError("attn-tile-gpu failed:\n" + diagnostics);
  module.walk([&](gpu::GPUFuncOp kernel) {
    if (!kernel.isKernel())
      return;
    GpuKernelInfo info;
    info.name = kernel.getName().str();
    if (auto grid = kernel->getAttrOfType<StringAttr>("attn.grid"))
      info.grid = grid.str();
    info.blockRows = integerAttr(kernel, "attn.block_rows");
    info.threads = integerAttr(kernel, "attn.threads");
    info.dynamicSharedBytes = integerAttr(kernel, "attn.dynamic_shared_memory");
    if (info.dynamicSharedBytes > gpuSharedMemoryLimit(options.target))
      throw GpuCompileError("kernel " + info.name + " needs " +
                            std::to_string(info.dynamicSharedBytes) +
                            " bytes of shared memory, over the " +
                            std::to_string(gpuSharedMemoryLimit(options.target)) + " of " +
                            gpuChip(options.target));
    program.kernels.push_back(info);
  });

  PassManager lowering(context);
  buildGpuLoweringPipeline(lowering, options.target);
  configure(lowering, "nvvm");
  if (failed(lowering.run(module)))
    throw GpuCompileError("lowering to NVVM failed:\n" + diagnostics);
  // Math without a PTX instruction (erf, pow, ...) lowers to libdevice calls: link it when the
  // CUDA toolkit has it, else say which function is missing.
  std::string libdevice, missing;
  module.walk([&](LLVM::LLVMFuncOp function) {
    if (function.isExternal() && function.getName().starts_with("__nv_") && missing.empty())
      missing = function.getName().str();
  });
  if (!missing.empty()) {
    auto found = findLibdevice();
    if (!found)
      throw GpuCompileError("the kernels call " + missing +
                            ", which needs CUDA's libdevice.10.bc (set CUDA_HOME): the "
                            "normalizer's math has no PTX instruction");
    libdevice = *found;
  }
  PassManager binary(context);
  buildGpuPtxPipeline(binary, libdevice);
  configure(binary, "ptx");
  if (failed(binary.run(module)))
    throw GpuCompileError("PTX emission failed:\n" + diagnostics);
  module.walk([&](gpu::BinaryOp binary) {
    for (Attribute object : binary.getObjects())
      if (auto gpuObject = dyn_cast<gpu::ObjectAttr>(object))
        program.ptx += gpuObject.getObject().str();
  });
  if (program.ptx.empty())
    throw GpuCompileError("gpu-module-to-binary produced no PTX");
  program.compileMillis =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
          .count();
  return program;
}

} // namespace attn::codegen
