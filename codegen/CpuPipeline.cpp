#include "codegen/CpuPipeline.h"

#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

namespace attn::codegen {
using namespace mlir;

namespace {
/// Erases the functions of the kernels not asked for, after attn-derive-backward has written
/// the backward ones beside the forward (`NAME` -> NAME_fwd once tiled, NAME_bwd_dq,
/// NAME_bwd_dkdv): the others then cost no compile time.
struct KeepCpuKernelPass : public PassWrapper<KeepCpuKernelPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(KeepCpuKernelPass)
  explicit KeepCpuKernelPass(CpuKernelSet kept) : kept(kept) {}
  StringRef getArgument() const final { return "attn-keep-cpu-kernel"; }
  void runOnOperation() override {
    auto kernelOf = [](StringRef name) {
      if (name.ends_with("_bwd_dq"))
        return CpuKernelSet::QueryGrad;
      if (name.ends_with("_bwd_dkdv"))
        return CpuKernelSet::KeyGrad;
      return CpuKernelSet::Forward;
    };
    for (func::FuncOp function :
         llvm::make_early_inc_range(getOperation().getOps<func::FuncOp>()))
      if (!function.isDeclaration() && kernelOf(function.getSymName()) != kept)
        function.erase();
  }
  CpuKernelSet kept;
};
} // namespace

const char *cpuKernelSuffix(CpuKernelSet kernel) {
  switch (kernel) {
  case CpuKernelSet::Forward:
    return "_fwd";
  case CpuKernelSet::QueryGrad:
    return "_bwd_dq";
  case CpuKernelSet::KeyGrad:
    return "_bwd_dkdv";
  case CpuKernelSet::All:
    break;
  }
  return "";
}

void buildCpuLoweringPipeline(OpPassManager &pm, bool canonicalizeLlvm) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  // One conversion for every dialect left (scf, affine, math, vector, x86vector, amx, memref,
  // arith, ub, cf, func): the upstream passes one after another took twice as long
  // (passes/CpuToLlvm.cpp).
  pm.addPass(mlir::attn::createAttnCpuToLlvm());
  pm.addPass(createReconcileUnrealizedCastsPass());
  if (canonicalizeLlvm)
    pm.addPass(createCanonicalizerPass());
}

void buildCpuPipeline(OpPassManager &pm, CpuKernelOptions options) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(mlir::attn::createAttnLegalize());
  mlir::attn::AttnDeriveBackwardOptions backwardOptions;
  backwardOptions.queryTile = options.queryTile;
  backwardOptions.keyTile = options.keyTile;
  backwardOptions.captureGradients = options.captureGradients;
  backwardOptions.blockMap = options.blockMap;
  pm.addPass(mlir::attn::createAttnDeriveBackward(backwardOptions));
  if (options.kernels != CpuKernelSet::All)
    pm.addPass(std::make_unique<KeepCpuKernelPass>(options.kernels));
  pm.addPass(mlir::attn::createAttnTile(
      mlir::attn::AttnTileOptions{options.queryTile, options.keyTile, options.blockMap,
                                  /*foldNormalizer=*/true}));
  mlir::attn::AttnLowerTilesCpuOptions tileOptions;
  tileOptions.vectorWidth = options.lanes;
  tileOptions.vectorRegisters = options.registers;
  tileOptions.bf16Products = options.bf16Products;
  pm.addPass(mlir::attn::createAttnLowerTilesCpu(tileOptions));
  // AVX-512 kernels (16 lanes) take vreduceps/vscalefps/vrcp14ps forms of exp2 and sigmoid.
  pm.addPass(mlir::attn::createAttnCpuFastMath(
      mlir::attn::AttnCpuFastMathOptions{/*avx512=*/options.lanes == 16}));
  buildCpuLoweringPipeline(pm, options.canonicalizeLlvm);
}

void registerCpuDialects(DialectRegistry &registry) {
  registry.insert<mlir::attn::AttnDialect, arith::ArithDialect, math::MathDialect,
                  func::FuncDialect, memref::MemRefDialect, scf::SCFDialect,
                  vector::VectorDialect, cf::ControlFlowDialect, ub::UBDialect, LLVM::LLVMDialect,
                  tensor::TensorDialect, x86vector::X86VectorDialect, amx::AMXDialect>();
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
}

namespace {
struct CpuPipelineOptions : PassPipelineOptions<CpuPipelineOptions> {
  Option<bool> captureGradients{*this, "capture-gradients",
                                llvm::cl::desc("the dQ kernel also accumulates the gradients "
                                               "of the f32 captures"),
                                llvm::cl::init(false)};
  Option<long> lanes{*this, "lanes",
                     llvm::cl::desc("f32 lanes per vector register: 16 (AVX-512, 32 registers), "
                                    "8 (AVX2) or 4 (16 registers)"),
                     llvm::cl::init(16)};
};
} // namespace

void registerCpuPipelines() {
  PassPipelineRegistration<CpuPipelineOptions>(
      "attn-cpu-pipeline",
      "attn dialect to LLVM dialect: legalize, derive the backward, tile, lower",
      [](OpPassManager &pm, const CpuPipelineOptions &pipelineOptions) {
        CpuKernelOptions options;
        options.captureGradients = pipelineOptions.captureGradients;
        options.lanes = pipelineOptions.lanes;
        options.registers = pipelineOptions.lanes == 16 ? 32 : 16;
        buildCpuPipeline(pm, options);
      });
  PassPipelineRegistration<>("attn-cpu-lower", "tiled kernels to LLVM dialect",
                             [](OpPassManager &pm) { buildCpuLoweringPipeline(pm); });
}
} // namespace attn::codegen
