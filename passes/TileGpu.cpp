// attn-tile-gpu: the GPU kernel pipeline as one pass. The GPU runs the same tile-level flash
// algorithm as the CPU (attn-tile, attn-derive-backward); attn-lower-tiles-gpu maps its tile
// ops to tensor-core fragments and attn-gpu-fast-math to approximate PTX math. What stays here
// is what only concerns the GPU's tile sizes: their checks and the storage type.
#include "dialects/attn/AttnDialect.h"
#include "passes/GpuFragments.h"
#include "passes/KernelEmitter.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/PassManager.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILEGPU
#include "passes/Passes.h.inc"

namespace {
using gpu_fragments::kChunk;

struct AttnTileGpuPass : impl::AttnTileGpuBase<AttnTileGpuPass> {
  using AttnTileGpuBase::AttnTileGpuBase;

  int64_t keyValueQuery() const {
    return keyValueQueryTile > 0 ? keyValueQueryTile : backwardKeyTile;
  }

  /// Tile constraints, as diagnostics on the op.
  LogicalResult checkShapes(AttentionOp op) {
    for (int64_t dim : {op.getHeadDim(), op.getValueHeadDim()})
      if (dim % 16 != 0 || dim < 16 || dim > 256)
        return op.emitOpError("GPU kernels need head dims that are multiples of 16 in "
                              "[16, 256], got ")
               << dim;
    if (wgmma && (warps % 4 != 0 || op.getHeadDim() % 64 != 0 || keyTile % 8 != 0 ||
                  keyTile > 256))
      return op.emitOpError("wgmma needs whole warpgroups (warps % 4 == 0), a head dim that "
                            "is a multiple of 64 and a key tile of at most 256, got warps = ")
             << warps << ", D = " << op.getHeadDim() << ", key tile = " << keyTile;
    struct Shape {
      int64_t warps, columns, stages;
    };
    for (Shape tiles : {Shape{warps, keyTile, stages}, Shape{backwardWarps, backwardKeyTile, 2},
                        Shape{backwardWarps, keyValueQuery(), 2}}) {
      if (tiles.warps < 1 || tiles.warps > 16 || tiles.stages < 2 || tiles.columns < 16 ||
          tiles.columns % 16 != 0)
        return op.emitOpError("GPU tiles need 1-16 warps, >= 2 stages and a key tile that is "
                              "a multiple of 16, got warps = ")
               << tiles.warps << ", stages = " << tiles.stages << ", key tile = "
               << tiles.columns;
      int64_t threads = 32 * tiles.warps;
      for (int64_t rows : {16 * tiles.warps, tiles.columns})
        for (int64_t dim : {op.getHeadDim(), op.getValueHeadDim()})
          if ((rows * dim / kChunk) % threads != 0)
            return op.emitOpError("a ")
                   << rows << "x" << dim << " tile does not split into 16-byte copies over "
                   << threads << " threads";
    }
    return success();
  }

  /// The option's storage type, else the op's when it is a 16-bit float, else bf16.
  std::string storageType(AttentionOp op) {
    if (!elementType.empty())
      return elementType;
    Type opElement = cast<ShapedType>(op.getQuery().getType()).getElementType();
    return opElement.isF16() ? "f16" : "bf16";
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (!elementType.empty() && elementType != "bf16" && elementType != "f16") {
      module.emitError("attn-tile-gpu: element-type must be bf16 or f16, got '")
          << elementType << "'";
      return signalPassFailure();
    }
    SmallVector<AttentionOp> ops;
    module.walk([&](AttentionOp op) { ops.push_back(op); });
    std::string element = elementType;
    for (AttentionOp op : ops) {
      if (failed(KernelEmitter::checkLowerable(op)) || failed(checkShapes(op)))
        return signalPassFailure();
      std::string opElement = storageType(op);
      if (!element.empty() && element != opElement)
        return (void)op.emitOpError("GPU kernels of one module share one storage type"),
               signalPassFailure();
      element = opElement;
    }
    if (ops.empty())
      return;

    OpPassManager pipeline(ModuleOp::getOperationName());
    if (backward) {
      // dQ: query rows on the warps, key blocks streamed; dK/dV: keys on the warps, query
      // blocks streamed.
      AttnDeriveBackwardOptions derive;
      derive.queryTile = 16 * backwardWarps;
      derive.keyTile = backwardKeyTile;
      derive.keyValueQueryTile = keyValueQuery();
      derive.keyValueKeyTile = 16 * backwardWarps;
      derive.captureGradients = captureGradients;
      pipeline.addPass(createAttnDeriveBackward(derive));
    }
    AttnTileOptions tile;
    tile.queryTile = 16 * warps;
    tile.keyTile = keyTile;
    pipeline.addPass(createAttnTile(tile));
    AttnLowerTilesGpuOptions lower;
    lower.elementType = element;
    lower.stages = stages;
    lower.wgmma = wgmma;
    pipeline.addPass(createAttnLowerTilesGpu(lower));
    if (fastMath)
      pipeline.addPass(createAttnGpuFastMath());
    if (failed(runPipeline(pipeline, module)))
      return signalPassFailure();
  }
};
} // namespace
} // namespace mlir::attn
