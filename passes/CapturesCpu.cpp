// CPU lowering of tile_capture_gradient: the score gradients scattered into the captured
// tensors' gradients at the reads the score_mod makes (CaptureReads.h lowers the reads).
#include "dialects/attn/AttnDialect.h"
#include "passes/CaptureReads.h"
#include "passes/CpuTileLowering.h"
#include "passes/ElementwiseReplay.h"

namespace mlir::attn {

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
        Value flat = flattenCapture(rewriter, e.loc, gradient);
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
