// CPU lowering of captured tensors: a scalar region's reads of them (memref.load of a capture in
// a tile op's region), as the elementwise replay meets them, and tile_capture_gradient, which
// scatters the score gradients into the captures' gradients at the same reads. Reads: indices that vary over the keys
// become one vector.gather from the flattened capture, uniform ones a scalar load. Every index
// is checked against the capture's bounds: an index outside is replaced by 0 (so memory is
// never touched outside the tensor) and sets the capture's fault flag, which the run time
// turns into an error naming the capture. A silent clamp would be a wrong answer.
#include "passes/CpuTileLowering.h"
#include "passes/ElementwiseReplay.h"

#include "dialects/attn/AttnDialect.h"

namespace mlir::attn {
namespace {
Value broadcastTo(Emit &e, Value value, VectorType lanes) {
  if (!lanes || isa<VectorType>(value.getType()))
    return value;
  return vector::BroadcastOp::create(e.b, e.loc, lanes.clone(value.getType()), value);
}

/// A contiguous memref as rank 1 (itself when it is).
Value flatten(OpBuilder &builder, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  if (type.getRank() == 1)
    return memref;
  SmallVector<ReassociationIndices> all(1);
  for (int64_t dimension = 0; dimension < type.getRank(); ++dimension)
    all.front().push_back(dimension);
  return memref::CollapseShapeOp::create(builder, loc, memref, all);
}

Value constantLike(Emit &e, Value like, int64_t value) {
  Value scalar = e.index(value);
  if (auto type = dyn_cast<VectorType>(like.getType()))
    return vector::BroadcastOp::create(e.b, e.loc, type, scalar);
  return scalar;
}
} // namespace

FailureOr<Value> lowerCaptureRead(OpBuilder &builder, Location loc, Operation &op,
                                  ArrayRef<Value> operands, ValueRange captures, Value fault,
                                  SmallVectorImpl<CaptureRead> *reads) {
  auto load = dyn_cast<memref::LoadOp>(op);
  if (!load)
    return Value();
  Value memref = operands[0];
  auto position = llvm::find(captures, memref) - captures.begin();
  if (position == static_cast<ptrdiff_t>(captures.size()))
    return Value(); // not a capture: no business of ours
  Emit e{builder, loc};
  auto type = cast<MemRefType>(memref.getType());
  ArrayRef<Value> indices = operands.drop_front();

  // The lanes the read varies over (null when every index is uniform).
  VectorType lanes;
  for (Value index : indices)
    if (auto vectorType = dyn_cast<VectorType>(index.getType()))
      lanes = vectorType;

  // In bounds per lane: 0 <= index < dim for every dimension.
  SmallVector<Value> sizes, clamped;
  Value inBounds;
  for (auto [dimension, index] : llvm::enumerate(indices)) {
    Value size = memref::DimOp::create(builder, loc, memref, dimension);
    sizes.push_back(size);
    Value sizeLike = broadcastTo(e, size, lanes);
    Value index_ = broadcastTo(e, index, lanes);
    Value low = arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::sge, index_,
                                      constantLike(e, index_, 0));
    Value high =
        arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::slt, index_, sizeLike);
    Value ok = arith::AndIOp::create(builder, loc, low, high);
    inBounds = inBounds ? arith::AndIOp::create(builder, loc, inBounds, ok) : ok;
    // Each index clamped on its own: an outside lane reads some element inside.
    clamped.push_back(
        arith::SelectOp::create(builder, loc, ok, index_, constantLike(e, index_, 0)).getResult());
  }
  if (inBounds) {
    Value anyOutside = inBounds;
    if (lanes)
      anyOutside = vector::ReductionOp::create(builder, loc, vector::CombiningKind::AND, inBounds);
    anyOutside = arith::XOrIOp::create(
        builder, loc, anyOutside,
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true)));
    scf::IfOp::create(builder, loc, anyOutside, [&](OpBuilder &, Location) {
      Value one = arith::ConstantOp::create(builder, loc, builder.getI32IntegerAttr(1));
      memref::StoreOp::create(builder, loc, one, fault, ValueRange{e.index(position)});
      scf::YieldOp::create(builder, loc);
    });
  }

  CaptureRead read{static_cast<size_t>(position), clamped, Value()};
  if (!lanes) {
    if (reads)
      reads->push_back(read);
    return memref::LoadOp::create(builder, loc, memref, clamped).getResult();
  }

  // Row-major offsets into the flattened capture (the run time passes captures contiguous).
  Value offsets;
  Value stride = e.index(1);
  for (int64_t dimension = static_cast<int64_t>(clamped.size()) - 1; dimension >= 0;
       --dimension) {
    Value term = arith::MulIOp::create(builder, loc, broadcastTo(e, clamped[dimension], lanes),
                                       broadcastTo(e, stride, lanes));
    offsets = offsets ? arith::AddIOp::create(builder, loc, offsets, term) : term;
    stride = arith::MulIOp::create(builder, loc, stride, sizes[dimension]);
  }
  read.offsets = offsets;
  if (reads)
    reads->push_back(read);
  Value flat = flatten(builder, loc, memref);
  auto resultType = lanes.clone(type.getElementType());
  Value every = arith::ConstantOp::create(
      builder, loc, lanes.clone(builder.getI1Type()),
      DenseElementsAttr::get(lanes.clone(builder.getI1Type()), true));
  Value passThrough = e.zeros(resultType);
  return vector::GatherOp::create(builder, loc, resultType, flat, ValueRange{e.index(0)},
                                  offsets, every, passThrough, IntegerAttr())
      .getResult();
}

namespace {
/// gradients[c][read index] += G * d mod / d read, for each f32 capture read of the region;
/// grads = G * d mod / d s. One row of the tile at a time, the region replayed over its keys
/// with one tangent per seed (the score and each f32 read). A read whose indices vary over the
/// keys scatters lane by lane (two lanes may hit one element); a uniform one adds the row's sum
/// once.
struct LowerCaptureGradient : OpRewritePattern<TileCaptureGradientOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileCaptureGradientOp op,
                                PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    Region &region = op.getScoreMod();
    Block &block = region.front();
    const int64_t width = shapeOf(op.getRaw())[1];

    // Seeds: the score, then each read of an f32 capture (with its position among all the
    // region's capture reads, which is the order the replay meets them in).
    SmallVector<Value> seeds = {block.getArgument(0)};
    SmallVector<size_t> readOrdinal;
    size_t ordinal = 0;
    for (Operation &inner : block.without_terminator()) {
      auto load = dyn_cast<memref::LoadOp>(inner);
      if (!load)
        continue;
      if (load.getType().isF32()) {
        seeds.push_back(load.getResult());
        readOrdinal.push_back(ordinal);
      }
      ++ordinal;
    }
    // The gradient memref of each capture (f32 ones only, in order).
    DenseMap<size_t, Value> gradientOf;
    size_t next = 0;
    for (auto [position, capture] : llvm::enumerate(op.getCaptures()))
      if (cast<MemRefType>(capture.getType()).getElementType().isF32())
        gradientOf[position] = op.getGradients()[next++];

    Value keys = e.validKeyIndices(op.getColStart(), op.getCols(), width);
    Value lanesValid = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::slt,
                                             e.iota(width, rewriter.getIndexType()),
                                             e.splat(op.getCols(), width));
    Value zero = e.splat(e.f32(0.0), width);
    Value end = arith::MinSIOp::create(rewriter, e.loc, op.getRows(),
                                       e.index(shapeOf(op.getRaw())[0]));
    LogicalResult status = success();
    e.loop(e.index(0), end, 1, [&](Value i) {
      Value row = e.add(op.getRowStart(), i);
      Value raw = e.loadVector(op.getRaw(), {i, e.index(0)}, width);
      Value upstream = e.loadVector(op.getGrads(), {i, e.index(0)}, width);
      SmallVector<CaptureRead> reads;
      auto replayed = replayElementwise(
          rewriter, e.loc, {raw, op.getBatch(), op.getHead(), row, keys},
          [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
            SmallVector<Value> all(args);
            all.append(op.getCaptures().begin(), op.getCaptures().end());
            return emitRegionWithTangents(b, op.getLoc(), region, all, seeds);
          },
          [&](Operation &inner, ArrayRef<Value> operands) {
            return lowerCaptureRead(rewriter, e.loc, inner, operands, op.getCaptures(),
                                    op.getFault(), &reads);
          });
      if (failed(replayed) || reads.size() != ordinal) {
        status = failure();
        return;
      }
      // Masked scores have G = 0 and add nothing, even where a partial is not finite.
      Value contributes = arith::AndIOp::create(
          rewriter, e.loc, lanesValid,
          arith::CmpFOp::create(rewriter, e.loc, arith::CmpFPredicate::ONE, upstream, zero));
      for (auto [seed, readIndex] : llvm::enumerate(readOrdinal)) {
        const CaptureRead &read = reads[readIndex];
        Value partial = e.asVector((*replayed)[2 + seed], width);
        Value contribution = arith::SelectOp::create(
            rewriter, e.loc, contributes,
            arith::MulFOp::create(rewriter, e.loc, upstream, partial), zero);
        Value gradient = gradientOf.lookup(read.capture);
        if (!read.offsets) {
          Value sum = vector::ReductionOp::create(rewriter, e.loc, vector::CombiningKind::ADD,
                                                  contribution);
          Value old = e.load(gradient, read.clamped);
          e.store(arith::AddFOp::create(rewriter, e.loc, old, sum), gradient, read.clamped);
          continue;
        }
        Value flat = flatten(rewriter, e.loc, gradient);
        for (int64_t lane = 0; lane < width; ++lane) {
          Value offset = vector::ExtractOp::create(rewriter, e.loc, read.offsets, lane);
          Value add = vector::ExtractOp::create(rewriter, e.loc, contribution, lane);
          Value old = e.load(flat, {offset});
          e.store(arith::AddFOp::create(rewriter, e.loc, old, add), flat, {offset});
        }
      }
      Value scoreGradient = arith::MulFOp::create(rewriter, e.loc, upstream,
                                                  e.asVector((*replayed)[1], width));
      e.storeVector(scoreGradient, op.getGrads(), {i, e.index(0)});
    });
    if (failed(status))
      return failure();
    rewriter.eraseOp(op);
    return success();
  }
};
} // namespace

void populateCaptureGradientCpuPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerCaptureGradient>(patterns.getContext());
}
} // namespace mlir::attn
