// tile_matmul on AMX tiles (bf16 products on hosts with AMX-BF16): 16 x 16 f32 accumulator
// tiles, 2 x 2 of them per block, fed by 16 x 32 bf16 tiles of the operands packed once per
// call (lhs rows; rhs row pairs interleaved, the layout tdpbf16ps multiplies).
#include "dialects/attn/AttnDialect.h"
#include "passes/CpuTileLowering.h"

#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mlir::attn {
namespace {
constexpr int64_t kTileRows = 16;    // rows of every AMX tile
constexpr int64_t kTileColumns = 16; // f32 columns of an accumulator tile
constexpr int64_t kTileDepth = 32;   // bf16 reduction elements per lhs tile row

struct LowerMatmulAmx : OpRewritePattern<TileMatmulOp> {
  LowerMatmulAmx(MLIRContext *context, VectorTarget target)
      : OpRewritePattern(context, /*benefit=*/2), target(target) {}

  LogicalResult matchAndRewrite(TileMatmulOp op, PatternRewriter &rewriter) const override {
    ArrayRef<int64_t> acc = shapeOf(op.getAcc());
    int64_t m = acc[0], n = acc[1], k = shapeOf(op.getRhs())[0];
    if (target.bf16Products != Bf16Products::Amx || m % kTileRows != 0 ||
        n % kTileColumns != 0 || k % kTileDepth != 0)
      return rewriter.notifyMatchFailure(op, "not an AMX product (shapes in 16 x 16 x 32)");
    Emit e{rewriter, op.getLoc()};
    Type bf16 = rewriter.getBF16Type(), f32 = rewriter.getF32Type();
    bool alpha = op.getAlpha() && op.getAlpha()->convertToFloat() != 1.0f;

    // The operands in bf16, zero past `depth` (what the tiles hold there is not read by the
    // other lowerings, and may be anything): the whole static depth runs and adds nothing
    // there.
    Value depth = arith::MinSIOp::create(rewriter, e.loc, op.getDepth(), e.index(k));
    Value lhs = allocBf16Buffer(rewriter, op, {m, k});
    if (op.getTransposeLhs())
      packTransposedRows(e, op.getLhs(), lhs, depth);
    else
      packRows(e, op.getLhs(), lhs, depth, target.lanes);
    Value rhs = allocBf16Buffer(rewriter, op, {k / 2, 2 * n});
    packRowPairs(e, op.getRhs(), rhs, e.index(k / 2), depth, target.lanes);

    // Row blocks of 32 (two tiles) where m allows, up to the valid rows rounded up.
    int64_t rowTiles = m % (2 * kTileRows) == 0 ? 2 : 1;
    int64_t colTiles = n % (2 * kTileColumns) == 0 ? 2 : 1;
    int64_t blockRows = rowTiles * kTileRows, blockCols = colTiles * kTileColumns;
    Value rows = arith::MinSIOp::create(rewriter, e.loc, op.getRows(), e.index(m));
    Value blocksEnd = arith::MulIOp::create(
        rewriter, e.loc,
        arith::DivUIOp::create(rewriter, e.loc, e.add(rows, e.index(blockRows - 1)),
                               e.index(blockRows)),
        e.index(blockRows));

    // The accumulator: rescaled in place first (the online correction); then loaded into
    // the tiles and stored back by them. With alpha the product goes through a scratch
    // block instead: acc = old * row_scale + alpha * product.
    bool throughScratch = alpha;
    if (op.getAccumulate() && op.getRowScale() && !throughScratch)
      e.loop(e.index(0), blocksEnd, 1, [&](Value i) {
        Value scale = e.splat(e.load(op.getRowScale(), {i}), target.lanes);
        for (int64_t c = 0; c < n; c += target.lanes) {
          Value old = e.loadVector(op.getAcc(), {i, e.index(c)}, target.lanes);
          e.storeVector(arith::MulFOp::create(rewriter, e.loc, old, scale), op.getAcc(),
                        {i, e.index(c)});
        }
      });
    Value scratch;
    if (throughScratch) {
      OpBuilder::InsertionGuard guard(rewriter);
      rewriter.setInsertionPointToStart(&op->getParentOfType<func::FuncOp>().front());
      scratch = memref::AllocaOp::create(rewriter, e.loc,
                                         MemRefType::get({blockRows, blockCols}, f32),
                                         rewriter.getI64IntegerAttr(64));
    }

    auto lhsTile = amx::TileType::get({kTileRows, kTileDepth}, bf16);
    auto rhsTile = amx::TileType::get({kTileDepth / 2, 2 * kTileColumns}, bf16);
    auto accTile = amx::TileType::get({kTileRows, kTileColumns}, f32);
    for (int64_t c0 = 0; c0 < n; c0 += blockCols) {
      Value anyColumns = arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::sgt,
                                               op.getCols(), e.index(c0));
      scf::IfOp::create(rewriter, e.loc, anyColumns, [&](OpBuilder &, Location) {
        e.loop(e.index(0), blocksEnd, blockRows, [&](Value r0) {
          auto rowOf = [&](int64_t tile) { return e.add(r0, e.index(tile * kTileRows)); };
          auto colOf = [&](int64_t tile) { return e.index(c0 + tile * kTileColumns); };
          SmallVector<Value> tiles;
          for (int64_t a = 0; a < rowTiles; ++a)
            for (int64_t b = 0; b < colTiles; ++b)
              tiles.push_back(op.getAccumulate() && !throughScratch
                                  ? Value(amx::TileLoadOp::create(rewriter, e.loc, accTile,
                                                                  op.getAcc(),
                                                                  {rowOf(a), colOf(b)}))
                                  : Value(amx::TileZeroOp::create(rewriter, e.loc, accTile)));
          // The reduction, unrolled: k is a tile dimension (at most a few tiles deep).
          for (int64_t kk = 0; kk < k; kk += kTileDepth) {
            SmallVector<Value> lhsTiles, rhsTiles;
            for (int64_t a = 0; a < rowTiles; ++a)
              lhsTiles.push_back(amx::TileLoadOp::create(rewriter, e.loc, lhsTile, lhs,
                                                         {rowOf(a), e.index(kk)}));
            for (int64_t b = 0; b < colTiles; ++b)
              rhsTiles.push_back(amx::TileLoadOp::create(
                  rewriter, e.loc, rhsTile, rhs,
                  {e.index(kk / 2), e.index(2 * (c0 + b * kTileColumns))}));
            for (int64_t a = 0; a < rowTiles; ++a)
              for (int64_t b = 0; b < colTiles; ++b) {
                Value &tile = tiles[a * colTiles + b];
                tile = amx::TileMulFOp::create(rewriter, e.loc, accTile, lhsTiles[a],
                                               rhsTiles[b], tile);
              }
          }
          for (int64_t a = 0; a < rowTiles; ++a)
            for (int64_t b = 0; b < colTiles; ++b) {
              Value tile = tiles[a * colTiles + b];
              if (throughScratch)
                amx::TileStoreOp::create(rewriter, e.loc, scratch,
                                         {e.index(a * kTileRows), e.index(b * kTileColumns)},
                                         tile);
              else
                amx::TileStoreOp::create(rewriter, e.loc, op.getAcc(), {rowOf(a), colOf(b)},
                                         tile);
            }
          if (throughScratch)
            addScaledProduct(e, op, scratch, r0, c0, blockRows, blockCols);
        });
        scf::YieldOp::create(rewriter, e.loc);
      });
    }
    rewriter.eraseOp(op);
    return success();
  }

  /// lhs [k][m] -> dst [m][k] bf16 by 16 x 16 squares transposed in registers; rows of lhs
  /// at or past `depth` zero.
  void packTransposedRows(Emit &e, Value src, Value dst, Value depth) const {
    ArrayRef<int64_t> shape = shapeOf(src); // [k][m]
    int64_t lanes = kTileRows;
    auto square = VectorType::get({lanes, lanes}, e.b.getF32Type());
    e.loop(e.index(0), e.index(shape[0]), lanes, [&](Value k0) {
      e.loop(e.index(0), e.index(shape[1]), lanes, [&](Value i0) {
        Value block = arith::ConstantOp::create(e.b, e.loc, square,
                                                DenseElementsAttr::get(square, 0.0f));
        Value zeros = e.splat(e.f32(0.0), lanes);
        for (int64_t r = 0; r < lanes; ++r) {
          Value row = e.add(k0, e.index(r));
          Value valid = arith::CmpIOp::create(e.b, e.loc, arith::CmpIPredicate::slt, row, depth);
          Value values = arith::SelectOp::create(e.b, e.loc, valid,
                                                 e.loadVector(src, {row, i0}, lanes), zeros);
          block = vector::InsertOp::create(e.b, e.loc, values, block, r);
        }
        Value transposed =
            vector::TransposeOp::create(e.b, e.loc, block, ArrayRef<int64_t>{1, 0});
        for (int64_t r = 0; r < lanes; ++r) {
          Value row = vector::ExtractOp::create(e.b, e.loc, transposed, r);
          auto type = cast<VectorType>(row.getType()).clone(e.b.getBF16Type());
          e.storeVector(arith::TruncFOp::create(e.b, e.loc, type, row), dst,
                        {e.add(i0, e.index(r)), k0});
        }
      });
    });
  }

  /// acc[r0 + i][c0 + j] = (old * row_scale or 0) + alpha * scratch[i][j].
  void addScaledProduct(Emit &e, TileMatmulOp op, Value scratch, Value r0, int64_t c0,
                        int64_t blockRows, int64_t blockCols) const {
    Value alpha = e.splat(e.f32(op.getAlpha()->convertToFloat()), target.lanes);
    e.loop(blockRows, [&](Value i) {
      Value row = e.add(r0, i);
      Value scale = op.getAccumulate() && op.getRowScale()
                        ? e.splat(e.load(op.getRowScale(), {row}), target.lanes)
                        : Value();
      for (int64_t c = 0; c < blockCols; c += target.lanes) {
        Value product = e.loadVector(scratch, {i, e.index(c)}, target.lanes);
        Value column = e.index(c0 + c);
        Value result;
        if (op.getAccumulate()) {
          Value old = e.loadVector(op.getAcc(), {row, column}, target.lanes);
          if (scale)
            old = arith::MulFOp::create(e.b, e.loc, old, scale);
          result = vector::FMAOp::create(e.b, e.loc, alpha, product, old);
        } else {
          result = arith::MulFOp::create(e.b, e.loc, alpha, product);
        }
        e.storeVector(result, op.getAcc(), {row, column});
      }
    });
  }

  VectorTarget target;
};
} // namespace

void populateTileMatmulAmxPatterns(RewritePatternSet &patterns, VectorTarget target) {
  patterns.add<LowerMatmulAmx>(patterns.getContext(), target);
}
} // namespace mlir::attn
