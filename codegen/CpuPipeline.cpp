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
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

namespace attn::codegen {
using namespace mlir;

void buildCpuLoweringPipeline(OpPassManager &pm) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  // Math first: what has no LLVM intrinsic becomes libm calls, on vectors lane by lane with
  // vector.extract/insert, which the vector conversion below then lowers.
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createConvertMathToLibmPass());
  // Vector reductions may reassociate: the row sums of the score tiles.
  ConvertVectorToLLVMPassOptions vectorOptions;
  vectorOptions.reassociateFPReductions = true;
  pm.addPass(createConvertVectorToLLVMPass(vectorOptions));
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createArithToLLVMConversionPass());
  // The shuffles of the packing transposes start from ub.poison vectors.
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  pm.addPass(createCanonicalizerPass());
}

void buildCpuPipeline(OpPassManager &pm, CpuKernelOptions options) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(mlir::attn::createAttnLegalize());
  pm.addPass(mlir::attn::createAttnDeriveBackward(
      mlir::attn::AttnDeriveBackwardOptions{options.queryTile, options.keyTile}));
  pm.addPass(mlir::attn::createAttnTile(
      mlir::attn::AttnTileOptions{options.queryTile, options.keyTile}));
  mlir::attn::AttnLowerTilesCpuOptions tileOptions;
  tileOptions.vectorWidth = options.lanes;
  tileOptions.vectorRegisters = options.registers;
  pm.addPass(mlir::attn::createAttnLowerTilesCpu(tileOptions));
  pm.addPass(mlir::attn::createAttnCpuFastMath());
  buildCpuLoweringPipeline(pm);
}

void registerCpuDialects(DialectRegistry &registry) {
  registry.insert<mlir::attn::AttnDialect, arith::ArithDialect, math::MathDialect,
                  func::FuncDialect, memref::MemRefDialect, scf::SCFDialect,
                  vector::VectorDialect, cf::ControlFlowDialect, ub::UBDialect, LLVM::LLVMDialect,
                  tensor::TensorDialect>();
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
}

void registerCpuPipelines() {
  PassPipelineRegistration<>("attn-cpu-pipeline",
                             "attn dialect to LLVM dialect: legalize, derive the backward, "
                             "tile, lower",
                             [](OpPassManager &pm) { buildCpuPipeline(pm); });
  PassPipelineRegistration<>("attn-cpu-lower", "tiled kernels to LLVM dialect",
                             buildCpuLoweringPipeline);
}
} // namespace attn::codegen
