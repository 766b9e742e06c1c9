// What the GPU lowering of the tile ops (attn-lower-tiles-gpu) shares between its files: where
// each tile lives (shared memory or register fragments, and their orientation), and the
// per-kernel lowering state. Included only by GpuTilePlacement.cpp, GpuTileCompute.cpp and
// LowerTilesGpu.cpp.
#ifndef PASSES_GPUTILELOWERING_H
#define PASSES_GPUTILELOWERING_H

#include "dialects/attn/AttnDialect.h"
#include "passes/GpuFragments.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"

#include <optional>

namespace mlir::attn::gpu_lowering {
using namespace gpu_fragments;

enum class Placement { Shared, Matrix, Vector };

struct TileLayout {
  Placement placement = Placement::Matrix;
  /// Matrix: fragment rows are the tile's columns. Vector: one value per fragment column.
  bool transposed = false;
  int64_t buffer = -1;           // Shared: index into the kernel's buffers
  bool loadedTransposed = false; // Shared: the tile is the transpose of the stored rows
  double multiplier = 1.0;       // Shared: tile_load's multiplier, applied to the products
  SmallVector<int64_t, 2> shape;
};

struct SharedBuffer {
  int64_t rows = 0, width = 0; // stored as the global rows: rows x width elements
  bool streamed = false;       // loaded inside a loop: `stages` copies
  bool atoms = false;          // wgmma operand: [width / 64][rows][64] swizzle atoms
  int64_t stages = 1;
  int64_t offset = 0; // bytes into the dynamic shared memory
  Value view;
  Value stage;            // the buffer read in the current loop iteration
  int64_t lastGroup = -1; // cp.async group of its last load outside a streamed loop
};


/// Tiles an op writes (placement decides which of them are registers).
SmallVector<Value> writtenTiles(Operation *op);
/// Tiles an elementwise op relates position by position (they share a fragment orientation).
SmallVector<Value> elementwiseGroup(Operation *op);

struct LoweringOptions {
  Type element;
  int64_t stages = 2;
  bool wgmma = false;
  int64_t fragmentBudget = 128;
};

/// Lowers one tile kernel (a func.func of attn-tile / attn-derive-backward) to a gpu.func.
class KernelLowering {
public:
  KernelLowering(func::FuncOp source, LoweringOptions options)
      : source(source), options(options), b(source.getContext()), loc(source.getLoc()) {}

  LogicalResult analyze();
  LogicalResult emit(gpu::GPUModuleOp module);

  int64_t warps = 0, blockRows = 0;
  bool needsRowDelta = false;
  int64_t valueHeadDim = 0;

private:
  // ----- analysis -----
  bool isTile(Value v) const { return layouts.count(v); }
  TileLayout &layout(Value v) { return layouts.find(v)->second; }
  int64_t registerCount(const TileLayout &l) const;

  // ----- emission -----
  LogicalResult lowerBlock(Block &block);
  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerFor(scf::ForOp op);
  LogicalResult lowerIf(scf::IfOp op);
  LogicalResult lowerLoad(TileLoadOp op);
  LogicalResult lowerStore(TileStoreOp op);
  LogicalResult lowerMatmul(TileMatmulOp op);
  LogicalResult lowerMask(TileMaskOp op);
  LogicalResult lowerScoreMod(TileScoreModOp op);
  LogicalResult lowerMaskClassify(TileMaskClassifyOp op);
  LogicalResult lowerMaskRegion(TileMaskRegionOp op);
  /// A scalar region (score_mod, mask) at `args`, its capture reads bounds-checked global
  /// loads; with `derivative`, also d(result)/d(args[0]).
  /// A region-evaluating tile op's captures and fault flags, as kernel values.
  std::pair<SmallVector<Value>, Value> mappedCaptures(ValueRange captures, Value fault);
  /// colStart + max(cols - 1, 0): where padding keys are evaluated (never past the sequence).
  Value lastValidKey(Value colStart, Value cols);
  FailureOr<SmallVector<Value>> evaluateRegion(Region &region, ValueRange args,
                                               ValueRange captures, Value fault,
                                               bool derivative);
  LogicalResult lowerNormalize(TileNormalizeOp op);
  LogicalResult lowerRowFinalize(TileRowFinalizeOp op);
  LogicalResult lowerProbabilities(TileProbabilitiesOp op);
  LogicalResult lowerScoreGradient(TileScoreGradientOp op);
  /// tile_copy and tile_capture_gradient of the dQ kernel (GpuCaptureGradient.cpp).
  LogicalResult lowerCopy(TileCopyOp op);
  LogicalResult lowerCaptureGradient(TileCaptureGradientOp op);

  Value mapped(Value v) { return map.lookupOrDefault(v); }
  FailureOr<ArrayRef<Value>> valuesOf(Operation *op, Value tile);
  SmallVector<Value> registerTilesWrittenIn(Operation *op);
  Value materialize(Value v, scf::ForOp loop, IRMapping &shifted);
  Value issueStreamed(scf::ForOp loop, ArrayRef<TileLoadOp> loads, Value iv, Value stage);
  void waitForBuffer(SharedBuffer &buffer);
  void hoistFragments(scf::ForOp loop, int64_t carried);

  /// (tile row, tile column) of register `i` of a matrix with layout `l`.
  std::pair<Value, Value> position(const TileLayout &l, int64_t i);
  /// The value of vector tile `vector` that belongs to register `i` of a matrix of layout `l`.
  Value rowValue(ArrayRef<Value> vector, const TileLayout &l, int64_t i) {
    return l.transposed ? vector[2 * (i / 4) + i % 2] : vector[(i % 4) / 2];
  }
  Value zeroWhereMasked(Value value, Value score) {
    Value masked = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, score,
                                         g->f32(-INFINITY));
    return arith::SelectOp::create(b, loc, masked, g->f32(0.0), value);
  }

  func::FuncOp source;
  LoweringOptions options;
  OpBuilder b;
  Location loc;
  std::optional<FragmentBuilder> g;
  DenseMap<Value, TileLayout> layouts;
  SmallVector<SharedBuffer> buffers;
  DenseSet<Operation *> wgmmaProducts;
  IRMapping map;
  DenseMap<Value, SmallVector<Value>> registers;
  DenseMap<int64_t, SmallVector<SmallVector<Value, 4>>> hoisted;
  Value warpRow;
  int64_t groupsIssued = 0, groupsCompleted = 0;
  Value lastToken;
};


} // namespace mlir::attn::gpu_lowering

#endif // PASSES_GPUTILELOWERING_H
