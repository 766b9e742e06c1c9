// CPU lowering of the mask region's tile ops: the region's scalar arith is replayed over a
// vector of key indices (one row of a block at a time), so a block is classified, or its
// scores masked, with vector compares rather than one scalar call per score.
#include "dialects/attn/AttnDialect.h"
#include "passes/CaptureReads.h"
#include "passes/CpuTileLowering.h"
#include "passes/ElementwiseReplay.h"

namespace mlir::attn {
namespace {

/// The region's verdict for keys `keys` (vector<width x index>) of `row`: vector<width x i1>.
/// batch, head and row stay scalars, so what depends on them alone is scalar work, and what
/// depends on the keys alone does not depend on the row (LICM hoists it out of a row loop).
/// `captures` (the op's captured tensors) and `fault` are read by the region's memref.loads.
FailureOr<Value> evaluateMask(Emit &e, Region &mask, Value batch, Value head, Value row,
                              Value keys, int64_t width, ValueRange captures, Value fault) {
  auto replayed = replayElementwise(
      e.b, e.loc, {batch, head, row, keys},
      [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
        SmallVector<Value> all(args);
        all.append(captures.begin(), captures.end());
        return SmallVector<Value>{inlineScalarRegion(b, mask, all)};
      },
      [&](Operation &op, ArrayRef<Value> operands) {
        return lowerCaptureRead(e.b, e.loc, op, operands, captures, fault);
      });
  if (failed(replayed))
    return failure();
  return e.asVector((*replayed)[0], width);
}

/// Two vectors carried over every (key chunk, row) of the block: some lane allowed, every
/// lane allowed (lanes past the valid keys count as allowed for "every" and not for "some").
/// Reduced once at the end: 0 empty, 1 full, 2 partial. Key chunks are the outer loop, so the
/// region's key-only work (a document id of the key) is done once per chunk, not per row.
/// With a block map, only an unclassified entry evaluates the region.
struct LowerMaskClassify : OpRewritePattern<TileMaskClassifyOp> {
  LowerMaskClassify(MLIRContext *context, VectorTarget target)
      : OpRewritePattern(context), target(target) {}
  LogicalResult matchAndRewrite(TileMaskClassifyOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    if (!op.getMap()) {
      FailureOr<Value> kind = classify(op, e);
      if (failed(kind))
        return failure();
      rewriter.replaceOp(op, *kind);
      return success();
    }
    // With a block map: the entry when it holds a kind (0, 1, 2), else the region's verdict,
    // written back. An index outside the map reads as unclassified and writes nothing.
    Value map = op.getMap();
    Value inBounds;
    for (auto [dimension, position] : llvm::enumerate(op.getMapIndices())) {
      Value size = memref::DimOp::create(rewriter, e.loc, map, dimension);
      Value inside = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::ult, position,
                                           size);
      inBounds = inBounds ? arith::AndIOp::create(rewriter, e.loc, inBounds, inside) : inside;
    }
    auto entry = scf::IfOp::create(
        rewriter, e.loc, inBounds,
        [&](OpBuilder &, Location) {
          Value stored = memref::LoadOp::create(rewriter, e.loc, map, op.getMapIndices());
          Value wide = arith::ExtUIOp::create(rewriter, e.loc, rewriter.getI64Type(), stored);
          scf::YieldOp::create(rewriter, e.loc, ValueRange{arith::IndexCastOp::create(
                                                    rewriter, e.loc, rewriter.getIndexType(),
                                                    wide)});
        },
        [&](OpBuilder &, Location) { scf::YieldOp::create(rewriter, e.loc, e.index(3)); });
    Value known = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::ult,
                                        entry.getResult(0), e.index(3));
    LogicalResult status = success();
    auto kind = scf::IfOp::create(
        rewriter, e.loc, known,
        [&](OpBuilder &, Location) { scf::YieldOp::create(rewriter, e.loc, entry.getResult(0)); },
        [&](OpBuilder &, Location) {
          FailureOr<Value> classified = classify(op, e);
          if (failed(classified)) {
            status = failure();
            scf::YieldOp::create(rewriter, e.loc, e.index(2));
            return;
          }
          scf::IfOp::create(rewriter, e.loc, inBounds, [&](OpBuilder &, Location) {
            Value wide = arith::IndexCastOp::create(rewriter, e.loc, rewriter.getI64Type(),
                                                    *classified);
            Value narrow = arith::TruncIOp::create(rewriter, e.loc, rewriter.getI8Type(), wide);
            memref::StoreOp::create(rewriter, e.loc, narrow, map, op.getMapIndices());
            scf::YieldOp::create(rewriter, e.loc);
          });
          scf::YieldOp::create(rewriter, e.loc, *classified);
        });
    if (failed(status))
      return failure();
    rewriter.replaceOp(op, kind.getResult(0));
    return success();
  }

  /// The region's verdict on the block, at the builder's insertion point.
  FailureOr<Value> classify(TileMaskClassifyOp op, Emit &e) const {
    OpBuilder &rewriter = e.b;
    const int64_t width = target.lanes;
    auto flags = VectorType::get({width}, rewriter.getI1Type());
    Value none = arith::ConstantOp::create(rewriter, e.loc, flags,
                                           DenseElementsAttr::get(flags, false));
    Value every = arith::ConstantOp::create(rewriter, e.loc, flags,
                                            DenseElementsAttr::get(flags, true));
    Value lanes = e.iota(width, rewriter.getIndexType());
    Value colsSplat = e.splat(op.getCols(), width);
    Value lastCol = arith::MaxSIOp::create(
        rewriter, e.loc, arith::SubIOp::create(rewriter, e.loc, op.getCols(), e.index(1)),
        e.index(0));
    LogicalResult status = success();
    auto keyLoop = scf::ForOp::create(
        rewriter, e.loc, e.index(0), op.getCols(), e.index(width), ValueRange{none, every},
        [&](OpBuilder &, Location, Value j, ValueRange keyCarried) {
          Value offsets = arith::AddIOp::create(rewriter, e.loc, lanes, e.splat(j, width));
          Value valid = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::slt,
                                              offsets, colsSplat);
          // Lanes past the valid keys are evaluated at the last valid key (and ignored): the
          // region never sees a key index past the sequence.
          Value keys = arith::AddIOp::create(
              rewriter, e.loc,
              arith::MinSIOp::create(rewriter, e.loc, offsets, e.splat(lastCol, width)),
              e.splat(op.getColStart(), width));
          Value invalid = arith::XOrIOp::create(rewriter, e.loc, valid, every);
          auto rowLoop = scf::ForOp::create(
              rewriter, e.loc, e.index(0), op.getRows(), e.index(1), keyCarried,
              [&](OpBuilder &, Location, Value i, ValueRange carried) {
                Value row = e.add(op.getRowStart(), i);
                FailureOr<Value> allowed =
                    evaluateMask(e, op.getMask(), op.getBatch(), op.getHead(), row, keys, width,
                                 op.getCaptures(), op.getFault());
                if (failed(allowed)) {
                  status = failure();
                  scf::YieldOp::create(rewriter, e.loc, carried);
                  return;
                }
                Value some = arith::OrIOp::create(
                    rewriter, e.loc, carried[0],
                    arith::AndIOp::create(rewriter, e.loc, *allowed, valid));
                Value all = arith::AndIOp::create(
                    rewriter, e.loc, carried[1],
                    arith::OrIOp::create(rewriter, e.loc, *allowed, invalid));
                scf::YieldOp::create(rewriter, e.loc, ValueRange{some, all});
              });
          scf::YieldOp::create(rewriter, e.loc, rowLoop.getResults());
        });
    if (failed(status))
      return failure();
    Value some = vector::ReductionOp::create(rewriter, e.loc, vector::CombiningKind::OR,
                                             keyLoop.getResult(0));
    Value all = vector::ReductionOp::create(rewriter, e.loc, vector::CombiningKind::AND,
                                            keyLoop.getResult(1));
    return arith::SelectOp::create(
               rewriter, e.loc, some,
               arith::SelectOp::create(rewriter, e.loc, all, e.index(1), e.index(2)), e.index(0))
        .getResult();
  }
  VectorTarget target;
};

/// scores[i, :] = select(mask(b, h, row_start + i, col_start + j), scores[i, :], -inf).
struct LowerMaskRegion : OpRewritePattern<TileMaskRegionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileMaskRegionOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    auto shape = cast<MemRefType>(op.getScores().getType()).getShape();
    const int64_t cols = shape[1];
    Value keys = e.validKeyIndices(op.getColStart(), op.getCols(), cols);
    Value minusInf = e.splat(e.f32(-INFINITY), cols);
    Value end = arith::MinSIOp::create(rewriter, e.loc, op.getRows(), e.index(shape[0]));
    LogicalResult status = success();
    e.loop(e.index(0), end, 1, [&](Value i) {
      Value row = e.add(op.getRowStart(), i);
      FailureOr<Value> allowed = evaluateMask(e, op.getMask(), op.getBatch(), op.getHead(),
                                              row, keys, cols, op.getCaptures(), op.getFault());
      if (failed(allowed)) {
        status = failure();
        return;
      }
      Value scores = e.loadVector(op.getScores(), {i, e.index(0)}, cols);
      e.storeVector(arith::SelectOp::create(rewriter, e.loc, *allowed, scores, minusInf),
                    op.getScores(), {i, e.index(0)});
    });
    if (failed(status))
      return failure();
    rewriter.eraseOp(op);
    return success();
  }
};
} // namespace

void populateMaskRegionCpuPatterns(RewritePatternSet &patterns, VectorTarget target) {
  patterns.add<LowerMaskClassify>(patterns.getContext(), target);
  patterns.add<LowerMaskRegion>(patterns.getContext());
}
} // namespace mlir::attn
