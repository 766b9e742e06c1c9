// Placement analysis of attn-lower-tiles-gpu: which tiles are shared-memory operands (one
// buffer per distinct rows loaded, streamed when loaded inside a loop) and which are register
// fragments, the fragment orientation (a tile used as the transposed lhs of a product is held
// transposed with everything elementwise-related to it), rows per CTA, wgmma operands and the
// shared-memory budget.
#include "passes/GpuTileLowering.h"

#include "llvm/ADT/EquivalenceClasses.h"

namespace mlir::attn::gpu_lowering {

/// Tiles an op writes (placement decides which of them are registers).
SmallVector<Value> writtenTiles(Operation *op) {
  if (auto fill = dyn_cast<TileFillOp>(op))
    return {fill.getTile()};
  if (auto load = dyn_cast<TileLoadOp>(op))
    return {load.getTile()};
  if (auto matmul = dyn_cast<TileMatmulOp>(op))
    return {matmul.getAcc()};
  if (auto mask = dyn_cast<TileMaskOp>(op))
    return {mask.getScores()};
  if (auto mask = dyn_cast<TileMaskRegionOp>(op))
    return {mask.getScores()};
  if (auto mod = dyn_cast<TileScoreModOp>(op)) {
    SmallVector<Value> out{mod.getScores()};
    if (mod.getDerivative())
      out.push_back(mod.getDerivative());
    return out;
  }
  if (auto init = dyn_cast<TileRowInitOp>(op))
    return SmallVector<Value>(init.getState());
  if (auto normalize = dyn_cast<TileNormalizeOp>(op)) {
    SmallVector<Value> out{normalize.getScores()};
    out.append(normalize.getState().begin(), normalize.getState().end());
    if (normalize.getCorrection())
      out.push_back(normalize.getCorrection());
    return out;
  }
  if (auto finalize = dyn_cast<TileRowFinalizeOp>(op))
    return {finalize.getFactor(), finalize.getLse()};
  if (auto probabilities = dyn_cast<TileProbabilitiesOp>(op))
    return {probabilities.getProbs()};
  if (auto gradient = dyn_cast<TileScoreGradientOp>(op))
    return {gradient.getGrads()};
  if (auto copy = dyn_cast<TileCopyOp>(op))
    return {copy.getDest()};
  if (auto captureGradient = dyn_cast<TileCaptureGradientOp>(op))
    return {captureGradient.getGrads()};
  return {};
}

/// Tiles an elementwise op relates position by position (they share a fragment orientation).
SmallVector<Value> elementwiseGroup(Operation *op) {
  SmallVector<Value> group;
  auto add = [&](Value v) {
    if (v)
      group.push_back(v);
  };
  if (auto mod = dyn_cast<TileScoreModOp>(op)) {
    add(mod.getScores());
    add(mod.getDerivative());
  } else if (auto normalize = dyn_cast<TileNormalizeOp>(op)) {
    add(normalize.getScores());
    for (Value v : normalize.getState())
      add(v);
    add(normalize.getCorrection());
  } else if (auto finalize = dyn_cast<TileRowFinalizeOp>(op)) {
    for (Value v : finalize.getState())
      add(v);
    add(finalize.getFactor());
    add(finalize.getLse());
  } else if (auto init = dyn_cast<TileRowInitOp>(op)) {
    for (Value v : init.getState())
      add(v);
  } else if (auto probabilities = dyn_cast<TileProbabilitiesOp>(op)) {
    add(probabilities.getScores());
    add(probabilities.getLse());
    add(probabilities.getProbs());
  } else if (auto gradient = dyn_cast<TileScoreGradientOp>(op)) {
    add(gradient.getScores());
    add(gradient.getProbs());
    add(gradient.getGrads());
    add(gradient.getRowTerm());
    add(gradient.getDerivative());
  } else if (auto copy = dyn_cast<TileCopyOp>(op)) {
    add(copy.getSource());
    add(copy.getDest());
  } else if (auto captureGradient = dyn_cast<TileCaptureGradientOp>(op)) {
    add(captureGradient.getRaw());
    add(captureGradient.getGrads());
  } else if (auto matmul = dyn_cast<TileMatmulOp>(op)) {
    add(matmul.getAcc());
    add(matmul.getRowScale());
  } else if (auto store = dyn_cast<TileStoreOp>(op)) {
    add(store.getTile());
    add(store.getRowScale());
  }
  return group;
}

/// Whether the value `build` emits from constants folds to 0: the formula is emitted into a
/// scratch function and folded.

int64_t KernelLowering::registerCount(const TileLayout &l) const {
  if (l.placement == Placement::Vector)
    return l.transposed ? l.shape[0] / 4 : 2;
  int64_t columns = l.transposed ? l.shape[0] : l.shape[1];
  return 4 * (columns / 8);
}

LogicalResult KernelLowering::analyze() {
  StringRef name = source.getName();
  bool forward = name.ends_with("_fwd");
  // Tiles: the kernel's static f32 allocations.
  source.walk([&](Operation *op) {
    if (!isa<memref::AllocaOp, memref::AllocOp>(op))
      return;
    auto type = cast<MemRefType>(op->getResult(0).getType());
    TileLayout l;
    l.shape.assign(type.getShape().begin(), type.getShape().end());
    l.placement = type.getRank() == 1 ? Placement::Vector : Placement::Matrix;
    layouts[op->getResult(0)] = l;
  });
  // Operands: 2-D tiles only tile_load writes live in shared memory, one buffer per distinct
  // (source, batch, head, start, count) in one block.
  DenseMap<Value, SmallVector<Operation *>> writers;
  source.walk([&](Operation *op) {
    for (Value tile : writtenTiles(op))
      writers[tile].push_back(op);
  });
  for (auto &[tile, l] : layouts) {
    if (l.placement != Placement::Matrix)
      continue;
    auto &ops = writers[tile];
    if (ops.empty() || !llvm::all_of(ops, [](Operation *op) { return isa<TileLoadOp>(op); }))
      continue;
    if (ops.size() != 1)
      return source.emitError("GPU lowering: a shared operand tile is loaded in more than one "
                              "place");
    l.placement = Placement::Shared;
  }
  SmallVector<TileLoadOp> sharedLoads;
  source.walk([&](TileLoadOp load) {
    if (layout(load.getTile()).placement == Placement::Shared)
      sharedLoads.push_back(load);
  });
  for (TileLoadOp load : sharedLoads) {
    TileLayout &l = layout(load.getTile());
    l.loadedTransposed = load.getTranspose();
    l.multiplier = load.getMultiplier() ? load.getMultiplier()->convertToDouble() : 1.0;
    int64_t rows = l.loadedTransposed ? l.shape[1] : l.shape[0];
    int64_t width = l.loadedTransposed ? l.shape[0] : l.shape[1];
    for (auto [index, other] : llvm::enumerate(sharedLoads)) {
      if (other == load)
        break;
      if (other->getBlock() == load->getBlock() && other.getSource() == load.getSource() &&
          other.getBatch() == load.getBatch() && other.getHead() == load.getHead() &&
          other.getStart() == load.getStart() && other.getCount() == load.getCount()) {
        l.buffer = layout(other.getTile()).buffer;
        break;
      }
    }
    if (l.buffer < 0) {
      SharedBuffer buffer;
      buffer.rows = rows;
      buffer.width = width;
      buffer.streamed = isa<scf::ForOp>(load->getParentOp());
      l.buffer = buffers.size();
      buffers.push_back(buffer);
    }
    SharedBuffer &buffer = buffers[l.buffer];
    if (buffer.rows != rows || buffer.width != width)
      return load.emitError("GPU lowering: loads of the same rows into tiles of other shapes");
    if (width % 16 != 0 || width < 16 || width > 256)
      return load.emitError("GPU kernels need head dims that are multiples of 16 in "
                            "[16, 256], got ")
             << width;
  }

  // Orientation: a tile read as the transposed lhs of a product is held transposed, and so
  // is every tile related to it position by position.
  llvm::EquivalenceClasses<Value> classes;
  SmallVector<Value> transposedRoots;
  LogicalResult status = success();
  source.walk([&](Operation *op) {
    SmallVector<Value> group;
    for (Value v : elementwiseGroup(op))
      if (isTile(v) && layout(v).placement != Placement::Shared)
        group.push_back(v);
    for (Value v : group)
      classes.insert(v);
    for (size_t i = 1; i < group.size(); ++i)
      classes.unionSets(group[0], group[i]);
    if (auto matmul = dyn_cast<TileMatmulOp>(op))
      if (matmul.getTransposeLhs()) {
        if (layout(matmul.getLhs()).placement != Placement::Matrix) {
          status = matmul.emitError("GPU lowering: a transposed lhs must be a register tile");
          return;
        }
        transposedRoots.push_back(matmul.getLhs());
      }
  });
  if (failed(status))
    return failure();
  for (Value root : transposedRoots) {
    classes.insert(root);
    for (Value member : classes.members(root))
      layout(member).transposed = true;
  }

  // Rows per CTA: every register matrix has 16 rows per warp on its distributed side.
  for (auto &[tile, l] : layouts) {
    if (l.placement != Placement::Matrix)
      continue;
    int64_t distributed = l.transposed ? l.shape[1] : l.shape[0];
    int64_t columns = l.transposed ? l.shape[0] : l.shape[1];
    if (blockRows == 0)
      blockRows = distributed;
    if (distributed != blockRows || distributed % 16 != 0 || columns % 16 != 0)
      return source.emitError("GPU lowering: register tiles need 16 rows per warp and "
                              "columns in multiples of 16, got ")
             << l.shape[0] << "x" << l.shape[1];
  }
  for (auto &[tile, l] : layouts)
    if (l.placement == Placement::Vector &&
        (l.transposed ? l.shape[0] % 16 != 0 : l.shape[0] != blockRows))
      return source.emitError("GPU lowering: a row tile of ") << l.shape[0]
             << " does not match the fragments";
  warps = blockRows / 16;
  if (warps < 1 || warps > 16)
    return source.emitError("GPU tiles need 1-16 warps, got ") << blockRows << " rows";

  // wgmma: the forward's S = Q K^T with both operands in shared memory.
  if (options.wgmma && forward) {
    source.walk([&](TileMatmulOp matmul) {
      TileLayout &lhs = layout(matmul.getLhs()), &rhs = layout(matmul.getRhs());
      TileLayout &acc = layout(matmul.getAcc());
      if (lhs.placement != Placement::Shared || rhs.placement != Placement::Shared ||
          acc.transposed || lhs.loadedTransposed || !rhs.loadedTransposed)
        return;
      int64_t depth = lhs.shape[1], columns = acc.shape[1];
      if (warps % 4 != 0 || depth % kAtomColumns != 0 || columns > 256 || columns % 8 != 0) {
        status = matmul.emitError("wgmma needs whole warpgroups (warps % 4 == 0), a head dim "
                                  "that is a multiple of 64 and a key tile of at most 256, "
                                  "got warps = ")
                 << warps << ", D = " << depth << ", key tile = " << columns;
        return;
      }
      wgmmaProducts.insert(matmul);
      buffers[lhs.buffer].atoms = true;
      buffers[rhs.buffer].atoms = true;
    });
    if (failed(status))
      return failure();
  }

  int64_t threads = 32 * warps;
  int64_t stages = forward ? options.stages : 2;
  for (SharedBuffer &buffer : buffers) {
    buffer.stages = buffer.streamed ? stages : 1;
    if ((buffer.rows * buffer.width / kChunk) % threads != 0)
      return source.emitError("a ") << buffer.rows << "x" << buffer.width
                                    << " tile does not split into 16-byte copies over "
                                    << threads << " threads";
  }

  // Row-wise backward: the dQ kernel's module also gets the delta kernel.
  if (name.ends_with("_bwd_dq")) {
    source.walk([&](TileProbabilitiesOp op) {
      if (op.getLse())
        needsRowDelta = true;
    });
    source.walk([&](TileLoadOp load) {
      if (load.getSource() == source.getArgument(3))
        valueHeadDim = layout(load.getTile()).shape[1];
    });
  }
  return success();
}


} // namespace mlir::attn::gpu_lowering
