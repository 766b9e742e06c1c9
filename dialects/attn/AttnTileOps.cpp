// Verifiers of the tile-level ops (AttnTileOps.td): tiles are static f32 memrefs whose shapes
// agree with each other; every diagnostic names the operand and the shapes.
#include "dialects/attn/AttnDialect.h"

using namespace mlir;
using namespace mlir::attn;

namespace {
/// A static f32 memref of `rank` (any rank when rank < 0).
LogicalResult checkTile(Operation *op, StringRef name, Value tile, int64_t rank) {
  auto type = dyn_cast<MemRefType>(tile.getType());
  if (!type || !type.hasStaticShape() || !type.getElementType().isF32())
    return op->emitOpError() << name << " must be a static f32 memref, got " << tile.getType();
  if (rank >= 0 && type.getRank() != rank)
    return op->emitOpError() << name << " must have rank " << rank << ", got " << type;
  return success();
}

ArrayRef<int64_t> shapeOf(Value tile) { return cast<MemRefType>(tile.getType()).getShape(); }

/// A [query rows x keys] score tile: rank 2, both extents positive. The tiler makes blocks of
/// at least one row and one key; the lowerings' vector code is written for such blocks (a
/// 0-key block has no vector width). Operand tiles may be empty (head dim 0): not these.
LogicalResult checkScoreTile(Operation *op, StringRef name, Value tile) {
  if (failed(checkTile(op, name, tile, 2)))
    return failure();
  if (shapeOf(tile)[0] < 1 || shapeOf(tile)[1] < 1)
    return op->emitOpError() << name
                             << " must have at least one row and one key column, got "
                             << tile.getType();
  return success();
}

/// An optional per-row tile: rank 1 with `rows` elements.
LogicalResult checkRowTile(Operation *op, StringRef name, Value tile, int64_t rows) {
  if (!tile)
    return success();
  if (failed(checkTile(op, name, tile, 1)))
    return failure();
  if (shapeOf(tile)[0] != rows)
    return op->emitOpError() << name << " must have " << rows << " rows, got "
                             << tile.getType();
  return success();
}

/// Row-wise state tiles: as many as the normalizer carries, one value per score row.
LogicalResult checkState(Operation *op, NormalizerAttrInterface normalizer, ValueRange state,
                         int64_t rows) {
  if (state.size() != normalizer.getRowStateSize())
    return op->emitOpError() << "normalizer " << Attribute(normalizer) << " carries "
                             << normalizer.getRowStateSize() << " row state values, got "
                             << state.size() << " state tiles";
  for (Value tile : state)
    if (failed(checkRowTile(op, "state", tile, rows)))
      return failure();
  return success();
}

LogicalResult checkBody(Operation *op, NormalizerAttrInterface normalizer, Region &body) {
  if (normalizer.usesBodyRegion() != !body.empty())
    return op->emitOpError() << "normalizer " << Attribute(normalizer)
                             << (body.empty() ? " needs" : " takes no")
                             << " normalizer_body region";
  if (!body.empty())
    return verifyScalarRegion(op, body, "normalizer_body",
                              {Float32Type::get(op->getContext())});
  return success();
}
/// Captured tensors as memrefs, and the fault flags (one i32 per capture) their reads set when
/// out of bounds: present exactly when there are captures.
LogicalResult checkCaptures(Operation *op, ValueRange captures, Value fault) {
  if (captures.empty() != !fault)
    return op->emitOpError() << (fault ? "takes a fault memref but no captures"
                                       : "reads captures but has no fault memref");
  if (!fault)
    return success();
  auto type = cast<MemRefType>(fault.getType());
  if (type.getRank() != 1 || !type.getElementType().isSignlessInteger(32))
    return op->emitOpError() << "fault must be a rank-1 i32 memref, got " << type;
  return success();
}

/// score (score_mod only), b, h, q, k, then the captures' memref types.
SmallVector<Type> regionArgumentTypes(Builder &b, bool withScore, ValueRange captures) {
  SmallVector<Type> types;
  if (withScore)
    types.push_back(b.getF32Type());
  types.append(4, b.getIndexType());
  for (Value capture : captures)
    types.push_back(capture.getType());
  return types;
}
} // namespace

LogicalResult TileFillOp::verify() { return checkTile(*this, "tile", getTile(), -1); }

LogicalResult TileLoadOp::verify() {
  auto source = cast<MemRefType>(getSource().getType());
  if (source.getRank() != 3 && source.getRank() != 4)
    return emitOpError() << "source must be [B, H, S] or [B, H, S, C], got " << source;
  int64_t tileRank = source.getRank() - 2;
  if (failed(checkTile(*this, "tile", getTile(), tileRank)))
    return failure();
  if (getTranspose() && tileRank != 2)
    return emitOpError("transpose needs a rank 2 tile");
  return success();
}

LogicalResult TileStoreOp::verify() {
  auto dest = cast<MemRefType>(getDest().getType());
  if (dest.getRank() != 3 && dest.getRank() != 4)
    return emitOpError() << "destination must be [B, H, S] or [B, H, S, C], got " << dest;
  if (failed(checkTile(*this, "tile", getTile(), dest.getRank() - 2)))
    return failure();
  return checkRowTile(*this, "row_scale", getRowScale(), shapeOf(getTile())[0]);
}

LogicalResult TileMatmulOp::verify() {
  if (failed(checkTile(*this, "lhs", getLhs(), 2)) ||
      failed(checkTile(*this, "rhs", getRhs(), 2)) ||
      failed(checkTile(*this, "acc", getAcc(), 2)))
    return failure();
  ArrayRef<int64_t> lhs = shapeOf(getLhs()), rhs = shapeOf(getRhs()), acc = shapeOf(getAcc());
  int64_t m = getTransposeLhs() ? lhs[1] : lhs[0], k = getTransposeLhs() ? lhs[0] : lhs[1];
  if (k != rhs[0] || m != acc[0] || rhs[1] != acc[1])
    return emitOpError() << "shapes do not contract: lhs " << getLhs().getType()
                         << (getTransposeLhs() ? " (transposed)" : "") << ", rhs "
                         << getRhs().getType() << ", acc " << getAcc().getType();
  if (getRowScale() && !getAccumulate())
    return emitOpError("row_scale rescales the accumulator: it needs accumulate");
  if (getInit() && getAccumulate())
    return emitOpError("init is the accumulator's start without accumulate: not both");
  return checkRowTile(*this, "row_scale", getRowScale(), m);
}

LogicalResult TileMaskOp::verify() {
  // The attribute is a signless i64: read it signed (getWindow() is unsigned, so a negative
  // window would pass as a huge one).
  if (IntegerAttr window = getWindowAttr(); window && window.getInt() < 0)
    return emitOpError() << "window must be non-negative, got " << window.getInt();
  return checkScoreTile(*this, "scores", getScores());
}

LogicalResult TileScoreModOp::verify() {
  if (failed(checkScoreTile(*this, "scores", getScores())))
    return failure();
  if (getDerivative()) {
    if (failed(checkTile(*this, "derivative", getDerivative(), 2)))
      return failure();
    if (shapeOf(getDerivative()) != shapeOf(getScores()))
      return emitOpError() << "derivative " << getDerivative().getType()
                           << " must have the scores' shape " << getScores().getType();
  }
  if (failed(checkCaptures(*this, getCaptures(), getFault())))
    return failure();
  Builder b(getContext());
  return verifyScalarRegion(*this, getScoreMod(), "score_mod",
                            regionArgumentTypes(b, /*withScore=*/true, getCaptures()));
}

LogicalResult TileCopyOp::verify() {
  if (failed(checkTile(*this, "source", getSource(), 2)) ||
      failed(checkTile(*this, "dest", getDest(), 2)))
    return failure();
  if (shapeOf(getSource()) != shapeOf(getDest()))
    return emitOpError() << "dest " << getDest().getType() << " must have the source's shape "
                         << getSource().getType();
  return success();
}

LogicalResult TileCaptureGradientOp::verify() {
  if (failed(checkScoreTile(*this, "raw", getRaw())) ||
      failed(checkTile(*this, "grads", getGrads(), 2)) ||
      failed(checkCaptures(*this, getCaptures(), getFault())))
    return failure();
  if (shapeOf(getRaw()) != shapeOf(getGrads()))
    return emitOpError() << "grads " << getGrads().getType() << " must have the raw scores' shape "
                         << getRaw().getType();
  SmallVector<MemRefType> floatCaptures;
  for (Value capture : getCaptures())
    if (auto type = cast<MemRefType>(capture.getType()); type.getElementType().isF32())
      floatCaptures.push_back(type);
  if (getGradients().size() != floatCaptures.size())
    return emitOpError() << "takes one gradient per f32 capture (" << floatCaptures.size()
                         << "), got " << getGradients().size();
  for (auto [position, gradient, capture] : llvm::enumerate(getGradients(), floatCaptures))
    if (gradient.getType() != capture)
      return emitOpError() << "gradient " << position << " must have its capture's type "
                           << capture << ", got " << gradient.getType();
  Builder b(getContext());
  return verifyScalarRegion(*this, getScoreMod(), "score_mod",
                            regionArgumentTypes(b, /*withScore=*/true, getCaptures()));
}

LogicalResult TileMaskClassifyOp::verify() {
  if (failed(checkCaptures(*this, getCaptures(), getFault())))
    return failure();
  if (Value map = getMap()) {
    auto type = cast<MemRefType>(map.getType());
    if (!type.getElementType().isSignlessInteger(8))
      return emitOpError() << "map must be an i8 memref, got " << type;
    if (static_cast<int64_t>(getMapIndices().size()) != type.getRank())
      return emitOpError() << "map of rank " << type.getRank() << " takes as many indices, got "
                           << getMapIndices().size();
  } else if (!getMapIndices().empty()) {
    return emitOpError() << "has " << getMapIndices().size() << " map indices but no map";
  }
  Builder b(getContext());
  return verifyScalarRegion(*this, getMask(), "mask",
                            regionArgumentTypes(b, /*withScore=*/false, getCaptures()),
                            b.getI1Type());
}

LogicalResult TileMaskRegionOp::verify() {
  if (failed(checkScoreTile(*this, "scores", getScores())) ||
      failed(checkCaptures(*this, getCaptures(), getFault())))
    return failure();
  Builder b(getContext());
  return verifyScalarRegion(*this, getMask(), "mask",
                            regionArgumentTypes(b, /*withScore=*/false, getCaptures()),
                            b.getI1Type());
}

LogicalResult TileRowInitOp::verify() {
  if (getState().empty())
    return checkState(*this, getNormalizer(), getState(), 0);
  if (failed(checkTile(*this, "state", getState().front(), 1)))
    return failure();
  return checkState(*this, getNormalizer(), getState(), shapeOf(getState().front())[0]);
}

LogicalResult TileNormalizeOp::verify() {
  if (failed(checkScoreTile(*this, "scores", getScores())) ||
      failed(checkBody(*this, getNormalizer(), getNormalizerBody())))
    return failure();
  int64_t rows = shapeOf(getScores())[0];
  if (failed(checkState(*this, getNormalizer(), getState(), rows)))
    return failure();
  if (getNormalizer().isRowWise() != bool(getCorrection()))
    return emitOpError() << "a correction tile goes with a row-wise normalizer, and only with one";
  if (getFolded() && !getNormalizer().getFoldedScoreFactor())
    return emitOpError() << "folded needs a normalizer with a folded form, got "
                         << getNormalizer();
  return checkRowTile(*this, "correction", getCorrection(), rows);
}

LogicalResult TileRowFinalizeOp::verify() {
  if (failed(checkTile(*this, "factor", getFactor(), 1)))
    return failure();
  int64_t rows = shapeOf(getFactor())[0];
  if (failed(checkRowTile(*this, "lse", getLse(), rows)))
    return failure();
  return checkState(*this, getNormalizer(), getState(), rows);
}

LogicalResult TileProbabilitiesOp::verify() {
  if (failed(checkScoreTile(*this, "scores", getScores())) ||
      failed(checkTile(*this, "probs", getProbs(), 2)) ||
      failed(checkBody(*this, getNormalizer(), getNormalizerBody())))
    return failure();
  if (shapeOf(getScores()) != shapeOf(getProbs()))
    return emitOpError() << "probs " << getProbs().getType() << " must have the scores' shape "
                         << getScores().getType();
  if (getNormalizer().isRowWise() != bool(getLse()))
    return emitOpError("an lse tile goes with a row-wise normalizer, and only with one");
  return checkRowTile(*this, "lse", getLse(), shapeOf(getScores())[0]);
}

LogicalResult TileScoreGradientOp::verify() {
  if (failed(checkScoreTile(*this, "scores", getScores())) ||
      failed(checkBody(*this, getNormalizer(), getNormalizerBody())))
    return failure();
  for (Value tile : {getProbs(), getGrads(), getDerivative()}) {
    if (!tile)
      continue;
    if (failed(checkTile(*this, "tile", tile, 2)))
      return failure();
    if (shapeOf(tile) != shapeOf(getScores()))
      return emitOpError() << tile.getType() << " must have the scores' shape "
                           << getScores().getType();
  }
  if (getNormalizer().isRowWise() != bool(getRowTerm()))
    return emitOpError("a row_term tile goes with a row-wise normalizer, and only with one");
  return checkRowTile(*this, "row_term", getRowTerm(), shapeOf(getScores())[0]);
}
