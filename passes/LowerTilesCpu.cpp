// attn-lower-tiles-cpu: lowers the tile ops to loops of host-width vector code.
//   tile_matmul: register-blocked micro-kernels sized from the host's vector width and
//                register count (TileMatmulCpu.cpp);
//   normalizer / score_mod / gradient ops: the interface's scalar formulas replayed over a
//                whole score row (ElementwiseReplay), row reductions with vector.reduction;
//   loads, stores and masks: row vectors.
// math.exp2/exp/tanh are left for attn-cpu-fast-math to turn into polynomials.
#include "dialects/attn/AttnDialect.h"
#include "passes/CaptureReads.h"
#include "passes/CpuTileLowering.h"
#include "passes/ElementwiseReplay.h"
#include "passes/MaskedScoreProbes.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "llvm/ADT/StringSwitch.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERTILESCPU
#include "passes/Passes.h.inc"

namespace {
//===----------------------------------------------------------------------===//
// Data movement
//===----------------------------------------------------------------------===//

struct LowerFill : OpRewritePattern<TileFillOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileFillOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    ArrayRef<int64_t> shape = shapeOf(op.getTile());
    Value value = e.f32(op.getValue().convertToDouble());
    Value row = e.splat(value, shape.back());
    if (shape.size() == 1)
      e.storeVector(row, op.getTile(), {e.index(0)});
    else
      e.loop(shape[0], [&](Value r) { e.storeVector(row, op.getTile(), {r, e.index(0)}); });
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerLoad : OpRewritePattern<TileLoadOp> {
  LowerLoad(MLIRContext *context, VectorTarget target)
      : OpRewritePattern(context), target(target) {}
  VectorTarget target;
  LogicalResult matchAndRewrite(TileLoadOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    Value tile = op.getTile(), source = op.getSource();
    ArrayRef<int64_t> shape = shapeOf(tile);
    int64_t rows = op.getTranspose() ? shape[1] : shape[0];
    Value count = arith::MinSIOp::create(rewriter, e.loc, op.getCount(), e.index(rows));
    count = arith::MaxSIOp::create(rewriter, e.loc, count, e.index(0));
    auto scaled = [&](Value v) {
      if (auto multiplier = op.getMultiplierAttr()) {
        Value m = e.f32(multiplier.getValueAsDouble());
        if (auto type = dyn_cast<VectorType>(v.getType()))
          m = e.splat(m, type.getNumElements());
        return Value(arith::MulFOp::create(rewriter, e.loc, v, m));
      }
      return v;
    };
    auto sourceRow = [&](Value r) {
      return e.add(op.getStart(), r);
    };
    if (shape.size() == 1) {
      e.loop(e.index(0), count, 1, [&](Value r) {
        Value v = e.load(source, {op.getBatch(), op.getHead(), sourceRow(r)});
        e.store(scaled(v), tile, {r});
      });
      e.loop(count, e.index(rows), 1, [&](Value r) { e.store(e.f32(0.0), tile, {r}); });
    } else if (!op.getTranspose()) {
      int64_t cols = shape[1];
      e.loop(e.index(0), count, 1, [&](Value r) {
        Value v = e.loadVector(source, {op.getBatch(), op.getHead(), sourceRow(r), e.index(0)},
                               cols);
        e.storeVector(scaled(v), tile, {r, e.index(0)});
      });
      Value zeros = e.splat(e.f32(0.0), cols);
      e.loop(count, e.index(rows), 1,
             [&](Value r) { e.storeVector(zeros, tile, {r, e.index(0)}); });
    } else {
      int64_t cols = shape[0];
      // tile[c][r] = source[r][c] element by element: any shape, any count (partial blocks;
      // loops, not unrolled lanes, to keep the kernels small for the JIT).
      auto laneByLane = [&] {
        e.loop(e.index(0), count, 1, [&](Value r) {
          e.loop(cols, [&](Value c) {
            Value v = e.load(source, {op.getBatch(), op.getHead(), sourceRow(r), c});
            e.store(scaled(v), tile, {c, r});
          });
        });
        e.loop(count, e.index(rows), 1, [&](Value r) {
          e.loop(cols, [&](Value c) { e.store(e.f32(0.0), tile, {c, r}); });
        });
      };
      int64_t lanes = target.lanes;
      if (rows % lanes != 0 || cols % lanes != 0) {
        laneByLane();
      } else {
        // A full block (the common case) moves as lanes x lanes squares transposed in
        // registers (vector.transpose, lowered to shuffles): no per-element stores.
        Value full = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::eq, count,
                                           e.index(rows));
        auto square = VectorType::get({lanes, lanes}, rewriter.getF32Type());
        scf::IfOp::create(
            rewriter, e.loc, full,
            [&](OpBuilder &, Location) {
              e.loop(e.index(0), e.index(rows), lanes, [&](Value r0) {
                e.loop(e.index(0), e.index(cols), lanes, [&](Value c0) {
                  Value block = arith::ConstantOp::create(
                      rewriter, e.loc, square, DenseElementsAttr::get(square, 0.0f));
                  for (int64_t i = 0; i < lanes; ++i) {
                    Value row = scaled(e.loadVector(
                        source,
                        {op.getBatch(), op.getHead(), sourceRow(e.add(r0, e.index(i))), c0},
                        lanes));
                    block = vector::InsertOp::create(rewriter, e.loc, row, block, i);
                  }
                  Value transposed = vector::TransposeOp::create(rewriter, e.loc, block,
                                                                 ArrayRef<int64_t>{1, 0});
                  for (int64_t i = 0; i < lanes; ++i)
                    e.storeVector(vector::ExtractOp::create(rewriter, e.loc, transposed, i),
                                  tile, {e.add(c0, e.index(i)), r0});
                });
              });
              scf::YieldOp::create(rewriter, e.loc);
            },
            [&](OpBuilder &, Location) {
              laneByLane();
              scf::YieldOp::create(rewriter, e.loc);
            });
      }
    }
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerStore : OpRewritePattern<TileStoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileStoreOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    Value tile = op.getTile(), dest = op.getDest();
    ArrayRef<int64_t> shape = shapeOf(tile);
    Value count = arith::MinSIOp::create(rewriter, e.loc, op.getCount(), e.index(shape[0]));
    e.loop(e.index(0), count, 1, [&](Value r) {
      Value row = e.add(op.getStart(), r);
      if (shape.size() == 1) {
        Value v = e.load(tile, {r});
        if (op.getRowScale())
          v = arith::MulFOp::create(rewriter, e.loc, v, e.load(op.getRowScale(), {r}));
        if (auto multiplier = op.getMultiplierAttr())
          v = arith::MulFOp::create(rewriter, e.loc, v, e.f32(multiplier.getValueAsDouble()));
        e.store(v, dest, {op.getBatch(), op.getHead(), row});
        return;
      }
      int64_t cols = shape[1];
      Value v = e.loadVector(tile, {r, e.index(0)}, cols);
      Value factor;
      if (op.getRowScale())
        factor = e.load(op.getRowScale(), {r});
      if (auto multiplier = op.getMultiplierAttr()) {
        Value m = e.f32(multiplier.getValueAsDouble());
        factor = factor ? Value(arith::MulFOp::create(rewriter, e.loc, factor, m)) : m;
      }
      if (factor)
        v = arith::MulFOp::create(rewriter, e.loc, v, e.splat(factor, cols));
      e.storeVector(v, dest, {op.getBatch(), op.getHead(), row, e.index(0)});
    });
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerMask : OpRewritePattern<TileMaskOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileMaskOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    ArrayRef<int64_t> shape = shapeOf(op.getScores());
    int64_t cols = shape[1];
    auto i64 = rewriter.getI64Type();
    auto toI64 = [&](Value v) { return arith::IndexCastOp::create(rewriter, e.loc, i64, v); };
    Value iota = e.iota(cols, i64);
    e.loop(shape[0], [&](Value i) {
      // Row i may see keys [lo, hi); a padding row sees none.
      Value row = e.add(op.getRowStart(), i);
      Value lo = e.index(0), hi = op.getKeyLength();
      std::optional<int64_t> window = op.getWindow();
      if (window)
        lo = arith::SubIOp::create(rewriter, e.loc, row, e.index(*window));
      if (op.getCausal())
        hi = arith::MinSIOp::create(rewriter, e.loc, hi, e.add(row, e.index(1)));
      else if (window)
        hi = arith::MinSIOp::create(rewriter, e.loc, hi, e.add(row, e.index(*window + 1)));
      Value rowValid = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::slt, row,
                                             op.getQueryLength());
      hi = arith::SelectOp::create(rewriter, e.loc, rowValid, hi, lo);
      Value keys = arith::AddIOp::create(rewriter, e.loc, iota,
                                         e.splat(toI64(op.getColStart()), cols));
      Value allowed = arith::AndIOp::create(
          rewriter, e.loc,
          arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::sge, keys,
                                e.splat(toI64(lo), cols)),
          arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::slt, keys,
                                e.splat(toI64(hi), cols)));
      Value scores = e.loadVector(op.getScores(), {i, e.index(0)}, cols);
      float fill = op.getFill() ? op.getFill()->convertToFloat() : -INFINITY;
      Value masked = arith::SelectOp::create(rewriter, e.loc, allowed, scores,
                                             e.splat(e.f32(fill), cols));
      e.storeVector(masked, op.getScores(), {i, e.index(0)});
    });
    rewriter.eraseOp(op);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Elementwise tile work: scalar formulas replayed over score rows
//===----------------------------------------------------------------------===//

/// Runs `body(row, rowScores)` for each valid row (< rows) of a score tile.
void forEachScoreRow(Emit &e, Value scores, Value rows, function_ref<void(Value, Value)> body) {
  ArrayRef<int64_t> shape = shapeOf(scores);
  Value end = arith::MinSIOp::create(e.b, e.loc, rows, e.index(shape[0]));
  e.loop(e.index(0), end, 1,
         [&](Value i) { body(i, e.loadVector(scores, {i, e.index(0)}, shape[1])); });
}

/// dest[i, :] = source[i, :], a vector per row.
struct LowerCopy : OpRewritePattern<TileCopyOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileCopyOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    ArrayRef<int64_t> shape = shapeOf(op.getSource());
    e.loop(shape[0], [&](Value i) {
      e.storeVector(e.loadVector(op.getSource(), {i, e.index(0)}, shape[1]), op.getDest(),
                    {i, e.index(0)});
    });
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerScoreMod : OpRewritePattern<TileScoreModOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileScoreModOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    int64_t cols = shapeOf(op.getScores())[1];
    Value keys = e.validKeyIndices(op.getColStart(), op.getCols(), cols);
    bool withDerivative = bool(op.getDerivative());
    double multiplier = op.getMultiplier().convertToDouble();
    LogicalResult status = success();
    forEachScoreRow(e, op.getScores(), op.getRows(), [&](Value i, Value s) {
      Value row = e.add(op.getRowStart(), i);
      // b, h and the row stay scalars: what the mod computes from them alone is scalar work.
      auto replayed = replayElementwise(
          rewriter, e.loc, {s, op.getBatch(), op.getHead(), row, keys},
          [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
            SmallVector<Value> all(args);
            all.append(op.getCaptures().begin(), op.getCaptures().end());
            if (!withDerivative)
              return SmallVector<Value>{inlineScalarRegion(b, op.getScoreMod(), all)};
            auto both = emitRegionWithDerivative(b, op.getLoc(), op.getScoreMod(), all);
            if (failed(both))
              return failure();
            return SmallVector<Value>{both->first, both->second};
          },
          [&](Operation &inner, ArrayRef<Value> operands) {
            return lowerCaptureRead(rewriter, e.loc, inner, operands, op.getCaptures(),
                                    op.getFault());
          });
      if (failed(replayed)) {
        status = failure();
        return;
      }
      Value value = e.asVector((*replayed)[0], cols);
      if (multiplier != 1.0)
        value = arith::MulFOp::create(rewriter, e.loc, value, e.splat(e.f32(multiplier), cols));
      e.storeVector(value, op.getScores(), {i, e.index(0)});
      if (withDerivative)
        e.storeVector(e.asVector((*replayed)[1], cols), op.getDerivative(), {i, e.index(0)});
    });
    if (failed(status))
      return failure();
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerRowInit : OpRewritePattern<TileRowInitOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileRowInitOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    SmallVector<Value> init = op.getNormalizer().emitRowStateInit(rewriter, e.loc);
    for (auto [value, tile] : llvm::zip(init, op.getState()))
      e.storeVector(e.splat(value, shapeOf(tile)[0]), tile, {e.index(0)});
    rewriter.eraseOp(op);
    return success();
  }
};

/// `value` (a 1-D vector of a multiple of `width` lanes) folded to `width` lanes with
/// `combine`, as a tree of its `width`-lane slices.
Value foldToWidth(Emit &e, Value value, int64_t width,
                  function_ref<Value(Value, Value)> combine) {
  int64_t lanes = cast<VectorType>(value.getType()).getNumElements();
  SmallVector<Value> parts;
  for (int64_t offset = 0; offset < lanes; offset += width)
    parts.push_back(vector::ExtractStridedSliceOp::create(e.b, e.loc, value, {offset}, {width},
                                                          {1}));
  while (parts.size() > 1) {
    SmallVector<Value> next;
    for (size_t i = 0; i + 1 < parts.size(); i += 2)
      next.push_back(combine(parts[i], parts[i + 1]));
    if (parts.size() % 2)
      next.push_back(parts.back());
    parts = std::move(next);
  }
  return parts.front();
}

/// rows[i] reduced across its lanes into lane i of one vector, for `rows.size()` (= the lane
/// count, a power of two) vectors: each level pairs vectors holding R rows x P partial lanes
/// each into one holding 2R rows x P/2 (two shuffles and one `combine` per pair), so G rows
/// take 3 (G - 1) vector ops instead of G horizontal reductions of 2 log2(G) each.
Value transposeReduce(Emit &e, SmallVector<Value> rows,
                      function_ref<Value(Value, Value)> combine) {
  int64_t width = rows.size();
  for (int64_t partials = width, count = 1; partials > 1; partials /= 2, count *= 2) {
    // Each vector: `count` rows x `partials` lanes, row-major.
    SmallVector<int64_t> low, high;
    for (int64_t source = 0; source < 2; ++source)
      for (int64_t row = 0; row < count; ++row)
        for (int64_t lane = 0; lane < partials / 2; ++lane) {
          int64_t base = source * width + row * partials + lane;
          low.push_back(base);
          high.push_back(base + partials / 2);
        }
    SmallVector<Value> next;
    for (size_t i = 0; i < rows.size(); i += 2)
      next.push_back(combine(
          vector::ShuffleOp::create(e.b, e.loc, rows[i], rows[i + 1], low),
          vector::ShuffleOp::create(e.b, e.loc, rows[i], rows[i + 1], high)));
    rows = std::move(next);
  }
  return rows.front();
}

struct LowerNormalize : OpRewritePattern<TileNormalizeOp> {
  LowerNormalize(MLIRContext *context, VectorTarget target)
      : OpRewritePattern(context), target(target) {}
  VectorTarget target;
  LogicalResult matchAndRewrite(TileNormalizeOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    NormalizerAttrInterface normalizer = op.getNormalizer();
    int64_t cols = shapeOf(op.getScores())[1];
    Region &body = op.getNormalizerBody();
    Value keyLength = op.getKeyLength();
    LogicalResult status = success();
    bool folded = op.getFolded();
    auto probability = [&](Value shifted) -> Value {
      auto p = replayElementwise(rewriter, e.loc, {shifted},
                                 [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
                                   return SmallVector<Value>{
                                       folded ? normalizer.emitFoldedProbability(b, op.getLoc(),
                                                                                 args[0])
                                              : normalizer.emitProbability(
                                                    b, op.getLoc(), args[0], keyLength, body)};
                                 });
      if (failed(p)) {
        status = failure();
        return shifted;
      }
      if (Operation *producer = (*p)[0].getDefiningOp(); producer && folded)
        producer->setAttr(kNoPositiveInfinityAttr, rewriter.getUnitAttr());
      return e.asVector((*p)[0], cols);
    };
    // Masked scores are -inf. Where p(-inf) is 0 as this CPU computes it (its polynomials
    // folded at -inf), the select that zeroes them is left out: softmax's exp2, sigmoid, relu.
    // A folded normalizer sees no masked score: its masks come after it.
    bool vanishes = folded || probabilityVanishesAtNegativeInfinity(normalizer, body, e.loc,
                                                                    /*fast=*/false,
                                                                    populateCpuFastMathPatterns);
    auto zeroWhereMasked = [&](Value p, Value s) {
      return vanishes ? p : e.zeroWhereMasked(p, s);
    };
    // A row-wise normalizer's statistics for `lanes` rows at a time: the block maxima and
    // sums of a group come out of one transposed reduction each, and the row state, the shift
    // and the correction are computed once per group on vectors of `lanes` rows (the
    // interface's formulas replayed), instead of two horizontal reductions and a scalar
    // state update (with its exp2) per row. The rows past the last whole group take the
    // per-row path below.
    ArrayRef<int64_t> shape = shapeOf(op.getScores());
    Value end = arith::MinSIOp::create(rewriter, e.loc, op.getRows(), e.index(shape[0]));
    Value rowsDone = e.index(0);
    int64_t group = target.lanes;
    if (normalizer.isRowWise() && cols % group == 0 && shape[0] >= group) {
      auto noNaN = arith::FastMathFlags::nnan;
      auto maxOf = [&](Value x, Value y) -> Value {
        return arith::MaxNumFOp::create(rewriter, e.loc, x, y, noNaN);
      };
      auto sumOf = [&](Value x, Value y) -> Value {
        return arith::AddFOp::create(rewriter, e.loc, x, y);
      };
      // Per-row partial vectors and the group's shifts, on the kernel's stack.
      Value partials, shifts;
      {
        OpBuilder::InsertionGuard guard(rewriter);
        rewriter.setInsertionPointToStart(
            &op->getParentOfType<func::FuncOp>().getBody().front());
        partials = memref::AllocaOp::create(
            rewriter, e.loc, MemRefType::get({group, group}, rewriter.getF32Type()));
        shifts = memref::AllocaOp::create(rewriter, e.loc,
                                          MemRefType::get({group}, rewriter.getF32Type()));
      }
      auto rowsOf = [&](Value first, function_ref<Value(Value, Value)> perRow,
                        function_ref<Value(Value, Value)> combine) {
        e.loop(group, [&](Value r) {
          Value row = e.add(first, r);
          e.storeVector(perRow(row, e.loadVector(op.getScores(), {row, e.index(0)}, cols)),
                        partials, {r, e.index(0)});
        });
        SmallVector<Value> vectors;
        for (int64_t r = 0; r < group; ++r)
          vectors.push_back(e.loadVector(partials, {e.index(r), e.index(0)}, group));
        return transposeReduce(e, vectors, combine);
      };
      rowsDone = arith::MulIOp::create(
          rewriter, e.loc, arith::DivSIOp::create(rewriter, e.loc, end, e.index(group)),
          e.index(group));
      e.loop(e.index(0), rowsDone, group, [&](Value first) {
        Value blockMax = rowsOf(
            first, [&](Value, Value s) { return foldToWidth(e, s, group, maxOf); }, maxOf);
        SmallVector<Value> state;
        for (Value tile : op.getState())
          state.push_back(e.loadVector(tile, {first}, group));
        SmallVector<Value> stateAndMax(state);
        stateAndMax.push_back(blockMax);
        auto shifted = replayElementwise(
            rewriter, e.loc, stateAndMax,
            [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
              return normalizer.emitRowShift(b, op.getLoc(), args.drop_back(), args.back());
            });
        if (failed(shifted)) {
          status = failure();
          return;
        }
        SmallVector<Value> values = llvm::map_to_vector(
            *shifted, [&](Value v) { return e.asVector(v, group); });
        Value correction = values.pop_back_val(), shift = values.pop_back_val();
        e.storeVector(shift, shifts, {e.index(0)});
        Value blockSum = rowsOf(
            first,
            [&](Value row, Value s) {
              Value rowShift = e.load(shifts, {arith::SubIOp::create(rewriter, e.loc, row, first)});
              Value p = probability(
                  arith::SubFOp::create(rewriter, e.loc, s, e.splat(rowShift, cols)));
              p = zeroWhereMasked(p, s);
              e.storeVector(p, op.getScores(), {row, e.index(0)});
              return foldToWidth(e, p, group, sumOf);
            },
            sumOf);
        SmallVector<Value> accumulateArgs(values);
        accumulateArgs.push_back(correction);
        accumulateArgs.push_back(blockSum);
        auto next = replayElementwise(
            rewriter, e.loc, accumulateArgs,
            [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
              return normalizer.emitRowAccumulate(b, op.getLoc(), args.drop_back(2),
                                                  args[args.size() - 2], args.back());
            });
        if (failed(next)) {
          status = failure();
          return;
        }
        for (auto [value, tile] : llvm::zip(*next, op.getState()))
          e.storeVector(e.asVector(value, group), tile, {first});
        e.storeVector(correction, op.getCorrection(), {first});
      });
    }
    e.loop(rowsDone, end, 1, [&](Value i) {
      Value s = e.loadVector(op.getScores(), {i, e.index(0)}, cols);
      if (!normalizer.isRowWise()) {
        e.storeVector(zeroWhereMasked(probability(s), s), op.getScores(), {i, e.index(0)});
        return;
      }
      SmallVector<Value> state;
      for (Value tile : op.getState())
        state.push_back(e.load(tile, {i}));
      // maxnum (no NaN fix-ups in the reduction): a NaN score still makes p and the row NaN.
      auto maxReduction =
          vector::ReductionOp::create(rewriter, e.loc, vector::CombiningKind::MAXNUMF, s);
      maxReduction.setFastmath(arith::FastMathFlags::nnan);
      Value blockMax = maxReduction;
      SmallVector<Value> shifted = normalizer.emitRowShift(rewriter, e.loc, state, blockMax);
      Value correction = shifted.pop_back_val(), shift = shifted.pop_back_val();
      Value p = probability(arith::SubFOp::create(rewriter, e.loc, s, e.splat(shift, cols)));
      p = zeroWhereMasked(p, s);
      Value blockSum = vector::ReductionOp::create(rewriter, e.loc, vector::CombiningKind::ADD, p);
      SmallVector<Value> next =
          normalizer.emitRowAccumulate(rewriter, e.loc, shifted, correction, blockSum);
      for (auto [value, tile] : llvm::zip(next, op.getState()))
        e.store(value, tile, {i});
      e.store(correction, op.getCorrection(), {i});
      e.storeVector(p, op.getScores(), {i, e.index(0)});
    });
    if (failed(status))
      return failure();
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerRowFinalize : OpRewritePattern<TileRowFinalizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileRowFinalizeOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    e.loop(shapeOf(op.getFactor())[0], [&](Value i) {
      SmallVector<Value> state;
      for (Value tile : op.getState())
        state.push_back(e.load(tile, {i}));
      auto [factor, lse] = op.getNormalizer().emitRowFinalize(rewriter, e.loc, state);
      e.store(factor, op.getFactor(), {i});
      e.store(lse, op.getLse(), {i});
    });
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerProbabilities : OpRewritePattern<TileProbabilitiesOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileProbabilitiesOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    NormalizerAttrInterface normalizer = op.getNormalizer();
    int64_t cols = shapeOf(op.getScores())[1];
    LogicalResult status = success();
    forEachScoreRow(e, op.getScores(), op.getRows(), [&](Value i, Value s) {
      Value lse = op.getLse() ? e.load(op.getLse(), {i}) : Value();
      auto p = replayElementwise(rewriter, e.loc, {s},
                                 [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
                                   return SmallVector<Value>{normalizer.emitBackwardProbability(
                                       b, op.getLoc(), args[0], lse, op.getKeyLength(),
                                       op.getNormalizerBody(), /*fast=*/false)};
                                 });
      if (failed(p)) {
        status = failure();
        return;
      }
      e.storeVector(e.zeroWhereMasked(e.asVector((*p)[0], cols), s), op.getProbs(),
                    {i, e.index(0)});
    });
    if (failed(status))
      return failure();
    rewriter.eraseOp(op);
    return success();
  }
};

struct LowerScoreGradient : OpRewritePattern<TileScoreGradientOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TileScoreGradientOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    NormalizerAttrInterface normalizer = op.getNormalizer();
    int64_t cols = shapeOf(op.getScores())[1];
    LogicalResult status = success();
    forEachScoreRow(e, op.getScores(), op.getRows(), [&](Value i, Value s) {
      Value p = e.loadVector(op.getProbs(), {i, e.index(0)}, cols);
      Value dp = e.loadVector(op.getGrads(), {i, e.index(0)}, cols);
      Value rowTerm = op.getRowTerm() ? e.load(op.getRowTerm(), {i}) : Value();
      auto ds = replayElementwise(
          rewriter, e.loc, {s, p, dp},
          [&](OpBuilder &b, ValueRange args) -> FailureOr<SmallVector<Value>> {
            auto gradient = normalizer.emitScoreGradient(b, op.getLoc(), args[0], args[1],
                                                         args[2], rowTerm, op.getKeyLength(),
                                                         op.getNormalizerBody());
            if (failed(gradient))
              return failure();
            return SmallVector<Value>{*gradient};
          });
      if (failed(ds)) {
        status = failure();
        return;
      }
      Value gradient = e.asVector((*ds)[0], cols);
      if (op.getDerivative())
        gradient = arith::MulFOp::create(
            rewriter, e.loc, gradient, e.loadVector(op.getDerivative(), {i, e.index(0)}, cols));
      e.storeVector(e.zeroWhereMasked(gradient, s), op.getGrads(), {i, e.index(0)});
    });
    if (failed(status))
      return failure();
    rewriter.eraseOp(op);
    return success();
  }
};

/// With bf16 products a tile pre-scaled on load (q times scale * log2 e) would be rounded
/// after the scaling and lose bits a bfloat16 input had. A tile that only loads write and only
/// products read is therefore loaded unscaled, and its products take the factor as alpha.
void moveLoadMultipliersIntoProducts(ModuleOp module) {
  llvm::SetVector<Value> scaledTiles;
  module.walk([&](TileLoadOp load) {
    if (load.getMultiplierAttr())
      scaledTiles.insert(load.getTile());
  });
  for (Value tile : scaledTiles) {
    SmallVector<TileLoadOp> loads;
    llvm::SetVector<TileMatmulOp> products;
    bool onlyLoadsAndProducts = llvm::all_of(tile.getUsers(), [&](Operation *user) {
      if (auto load = dyn_cast<TileLoadOp>(user); load && load.getTile() == tile) {
        loads.push_back(load);
        return true;
      }
      if (auto product = dyn_cast<TileMatmulOp>(user); product && product.getAcc() != tile) {
        products.insert(product);
        return true;
      }
      return isa<memref::DeallocOp>(user);
    });
    if (!onlyLoadsAndProducts || loads.empty())
      continue;
    FloatAttr factor = loads.front().getMultiplierAttr();
    if (!factor ||
        llvm::any_of(loads, [&](TileLoadOp load) { return load.getMultiplierAttr() != factor; }))
      continue;
    for (TileLoadOp load : loads)
      load.removeMultiplierAttr();
    for (TileMatmulOp product : products) {
      double alpha = product.getAlpha() ? product.getAlpha()->convertToDouble() : 1.0;
      for (Value operand : {product.getLhs(), product.getRhs()})
        if (operand == tile)
          alpha *= factor.getValueAsDouble();
      product.setAlphaAttr(FloatAttr::get(Float32Type::get(module.getContext()), alpha));
    }
  }
}

bool isTileOp(Operation *op) {
  return isa<TileFillOp, TileLoadOp, TileStoreOp, TileMatmulOp, TileMaskOp, TileScoreModOp,
             TileRowInitOp, TileNormalizeOp, TileRowFinalizeOp, TileProbabilitiesOp,
             TileScoreGradientOp, TileMaskClassifyOp, TileMaskRegionOp, TileCopyOp,
             TileCaptureGradientOp>(op);
}

struct AttnLowerTilesCpuPass : impl::AttnLowerTilesCpuBase<AttnLowerTilesCpuPass> {
  using AttnLowerTilesCpuBase::AttnLowerTilesCpuBase;
  void runOnOperation() override {
    if (vectorWidth != 4 && vectorWidth != 8 && vectorWidth != 16) {
      getOperation()->emitError() << "vector-width must be 4, 8 or 16 f32 lanes, got "
                                  << vectorWidth;
      return signalPassFailure();
    }
    auto products = llvm::StringSwitch<std::optional<Bf16Products>>(bf16Products)
                        .Case("none", Bf16Products::None)
                        .Case("avx512", Bf16Products::Avx512)
                        .Case("amx", Bf16Products::Amx)
                        .Default(std::nullopt);
    if (!products) {
      getOperation()->emitError() << "bf16-products must be none, avx512 or amx, got '"
                                  << bf16Products << "'";
      return signalPassFailure();
    }
    VectorTarget target{vectorWidth, vectorRegisters, microKernelRows, microKernelVectors,
                        vectorWidth == 16 ? *products : Bf16Products::None};
    if (target.bf16Products != Bf16Products::None)
      moveLoadMultipliersIntoProducts(getOperation());
    // Rows of a tile become vectors and loops unrolled per vector: a tile past this size is
    // a diagnostic, not an out-of-memory compile.
    constexpr int64_t kMaxTileDim = 4096;
    WalkResult tooBig = getOperation()->walk([&](Operation *op) {
      if (!isTileOp(op))
        return WalkResult::advance();
      for (Value operand : op->getOperands())
        if (auto type = dyn_cast<MemRefType>(operand.getType()); type && type.hasStaticShape())
          for (int64_t dim : type.getShape())
            if (dim > kMaxTileDim) {
              op->emitOpError() << "tile " << type << " has a dimension above " << kMaxTileDim;
              return WalkResult::interrupt();
            }
      return WalkResult::advance();
    });
    if (tooBig.wasInterrupted())
      return signalPassFailure();
    MLIRContext *context = &getContext();
    RewritePatternSet patterns(context);
    patterns.add<LowerFill, LowerStore, LowerMask, LowerCopy, LowerScoreMod, LowerRowInit,
                 LowerRowFinalize, LowerProbabilities, LowerScoreGradient>(context);
    patterns.add<LowerLoad, LowerNormalize>(context, target);
    populateTileMatmulCpuPatterns(patterns, target);
    populateMaskRegionCpuPatterns(patterns, target);
    populateCaptureGradientCpuPatterns(patterns);
    AmxPackedOperands packedOperands;
    packLoadedAmxOperands(getOperation(), target, packedOperands);
    populateTileMatmulAmxPatterns(patterns, target, &packedOperands);
    // Each pattern erases its op. No folding, and no constant hoisting: that would pull the
    // constants of the tile ops' scalar regions out of them while they are being lowered.
    GreedyRewriteConfig config;
    config.enableFolding(false);
    config.enableConstantCSE(false);
    // Nor region simplification: the canonicalizer after attn-cpu-fast-math does it once,
    // instead of after every round here (more than half of this pass's time).
    config.setRegionSimplificationLevel(GreedySimplifyRegionLevel::Disabled);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns), config)))
      return signalPassFailure();
    WalkResult left = getOperation()->walk([](Operation *op) {
      if (isTileOp(op)) {
        op->emitOpError("was not lowered to the CPU");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (left.wasInterrupted())
      return signalPassFailure();
    // The packing transposes become register shuffles (16x16 ones tuned for AVX-512).
    RewritePatternSet transposes(context);
    vector::populateVectorTransposeLoweringPatterns(
        transposes, target.lanes == 16 ? vector::VectorTransposeLowering::Shuffle16x16
                                       : vector::VectorTransposeLowering::Shuffle1D);
    GreedyRewriteConfig shuffles;
    shuffles.setRegionSimplificationLevel(GreedySimplifyRegionLevel::Disabled);
    if (failed(applyPatternsGreedily(getOperation(), std::move(transposes), shuffles)))
      signalPassFailure();
  }
};
} // namespace
} // namespace mlir::attn
