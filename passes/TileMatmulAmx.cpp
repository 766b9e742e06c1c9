// tile_matmul on AMX tiles (bf16 products on hosts with AMX-BF16): 16 x 16 f32 accumulator
// tiles, 2 x 2 of them per block, fed by 16 x 32 bf16 tiles of the operands packed once per
// call (lhs rows; rhs row pairs interleaved, the layout tdpbf16ps multiplies). Operands that a
// tile_load fills for this product alone are packed straight from the load's source instead,
// where the load was (packLoadedAmxOperands).
#include "dialects/attn/AttnDialect.h"
#include "passes/CpuTileLowering.h"

#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Matchers.h"

namespace mlir::attn {
namespace {
constexpr int64_t kTileRows = 16;    // rows of every AMX tile
constexpr int64_t kTileColumns = 16; // f32 columns of an accumulator tile
constexpr int64_t kTileDepth = 32;   // bf16 reduction elements per lhs tile row

bool isAmxProduct(TileMatmulOp op, VectorTarget target) {
  ArrayRef<int64_t> acc = shapeOf(op.getAcc());
  int64_t m = acc[0], n = acc[1], k = shapeOf(op.getRhs())[0];
  return target.bf16Products == Bf16Products::Amx && m % kTileRows == 0 &&
         n % kTileColumns == 0 && k % kTileDepth == 0;
}

struct LowerMatmulAmx : OpRewritePattern<TileMatmulOp> {
  LowerMatmulAmx(MLIRContext *context, VectorTarget target, const AmxPackedOperands *packed)
      : OpRewritePattern(context, /*benefit=*/2), target(target), packed(packed) {}

  LogicalResult matchAndRewrite(TileMatmulOp op, PatternRewriter &rewriter) const override {
    ArrayRef<int64_t> acc = shapeOf(op.getAcc());
    int64_t m = acc[0], n = acc[1], k = shapeOf(op.getRhs())[0];
    if (!isAmxProduct(op, target))
      return rewriter.notifyMatchFailure(op, "not an AMX product (shapes in 16 x 16 x 32)");
    std::pair<Value, Value> fromLoads =
        packed ? packed->lookup(op.getOperation()) : std::pair<Value, Value>{};
    Emit e{rewriter, op.getLoc()};
    Type bf16 = rewriter.getBF16Type(), f32 = rewriter.getF32Type();

    // The operands in bf16, zero past `depth` (what the tiles hold there is not read by the
    // other lowerings, and may be anything): the whole static depth runs and adds nothing
    // there.
    Value depth = arith::MinSIOp::create(rewriter, e.loc, op.getDepth(), e.index(k));
    Value lhs = fromLoads.first;
    if (!lhs) {
      lhs = allocBf16Buffer(rewriter, op, {m, k});
      if (op.getTransposeLhs())
        packTransposedRows(e, op.getLhs(), lhs, depth);
      else
        packRows(e, op.getLhs(), lhs, depth, target.lanes);
    }
    Value rhs = fromLoads.second;
    if (!rhs) {
      rhs = allocBf16Buffer(rewriter, op, {k / 2, 2 * n});
      packRowPairs(e, op.getRhs(), rhs, e.index(k / 2), depth, target.lanes);
    }

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
    bool throughScratch = op.getAlpha() && op.getAlpha()->convertToFloat() != 1.0f;
    // An initial value goes into the accumulator, which the tiles then load (with alpha,
    // addScaledProduct adds it).
    bool fromAccumulator = op.getAccumulate() || op.getInit();
    if (op.getInit() && !throughScratch)
      e.loop(e.index(0), blocksEnd, 1, [&](Value i) {
        Value start = e.splat(op.getInit(), target.lanes);
        for (int64_t c = 0; c < n; c += target.lanes)
          e.storeVector(start, op.getAcc(), {i, e.index(c)});
      });
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
              tiles.push_back(fromAccumulator && !throughScratch
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
        Value block = e.zeros(square);
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
          e.storeVector(e.toBf16(row), dst, {e.add(i0, e.index(r)), k0});
        }
      });
    });
  }

  /// acc[r0 + i][c0 + j] = (old * row_scale, or init, or 0) + alpha * scratch[i][j].
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
        } else if (op.getInit()) {
          result = vector::FMAOp::create(e.b, e.loc, alpha, product,
                                         e.splat(op.getInit(), target.lanes));
        } else {
          result = arith::MulFOp::create(e.b, e.loc, alpha, product);
        }
        e.storeVector(result, op.getAcc(), {row, column});
      }
    });
  }

  VectorTarget target;
  const AmxPackedOperands *packed;
};

//===----------------------------------------------------------------------===//
// Operands packed straight from their loads
//===----------------------------------------------------------------------===//

/// The rows [0, count) of a (batch, head) slice, row r at source[b, h, start + r].
struct SourceRows {
  Value source, batch, head, start;
  Value count; ///< clamped to the tile's rows

  Value row(Emit &e, Value r, int64_t column, int64_t width) const {
    return e.loadVector(source, {batch, head, e.add(start, r), e.index(column)}, width);
  }
};

/// dst[r][c] = bf16(source row r) for r < count, 0 after: an lhs [m][k].
void packRowsFromSource(Emit &e, const SourceRows &source, Value dst, int64_t lanes) {
  ArrayRef<int64_t> shape = cast<MemRefType>(dst.getType()).getShape();
  e.loop(e.index(0), source.count, 1, [&](Value r) {
    for (int64_t c = 0; c < shape[1]; c += lanes) {
      int64_t width = std::min(lanes, shape[1] - c);
      e.storeVector(e.toBf16(source.row(e, r, c, width)), dst, {r, e.index(c)});
    }
  });
  e.loop(source.count, e.index(shape[0]), 1, [&](Value r) {
    for (int64_t c = 0; c < shape[1]; c += lanes) {
      int64_t width = std::min(lanes, shape[1] - c);
      e.storeVector(e.zeros(VectorType::get({width}, e.b.getBF16Type())), dst,
                    {r, e.index(c)});
    }
  });
}

/// dst[p][2c + t] = bf16(source row 2p + t, column c), rows at or past count 0: an rhs [k][n]
/// in pairs, without reading past the valid rows.
void packRowPairsFromSource(Emit &e, const SourceRows &source, Value dst, int64_t lanes) {
  ArrayRef<int64_t> shape = cast<MemRefType>(dst.getType()).getShape(); // [k/2][2n]
  int64_t cols = shape[1] / 2;
  Type bf16 = e.b.getBF16Type();
  auto storePair = [&](Value p, function_ref<Value(int64_t, int64_t)> high) {
    Value even = arith::MulIOp::create(e.b, e.loc, p, e.index(2));
    for (int64_t c = 0; c < cols; c += lanes) {
      int64_t width = std::min(lanes, cols - c);
      Value low = e.toBf16(source.row(e, even, c, width));
      e.storeVector(vector::InterleaveOp::create(e.b, e.loc, low, high(c, width)), dst,
                    {p, e.index(2 * c)});
    }
  };
  Value fullPairs = arith::DivUIOp::create(e.b, e.loc, source.count, e.index(2));
  e.loop(e.index(0), fullPairs, 1, [&](Value p) {
    Value odd = e.add(arith::MulIOp::create(e.b, e.loc, p, e.index(2)), e.index(1));
    storePair(p, [&](int64_t c, int64_t width) {
      return e.toBf16(source.row(e, odd, c, width));
    });
  });
  Value oddCount = arith::CmpIOp::create(
      e.b, e.loc, arith::CmpIPredicate::ne,
      arith::RemUIOp::create(e.b, e.loc, source.count, e.index(2)), e.index(0));
  scf::IfOp::create(e.b, e.loc, oddCount, [&](OpBuilder &, Location) {
    storePair(fullPairs, [&](int64_t, int64_t width) {
      return e.zeros(VectorType::get({width}, bf16));
    });
    scf::YieldOp::create(e.b, e.loc);
  });
  Value usedPairs =
      arith::DivUIOp::create(e.b, e.loc, e.add(source.count, e.index(1)), e.index(2));
  e.loop(usedPairs, e.index(shape[0]), 1, [&](Value p) {
    for (int64_t c = 0; c < 2 * cols; c += 2 * lanes) {
      int64_t width = std::min(2 * lanes, 2 * cols - c);
      e.storeVector(e.zeros(VectorType::get({width}, bf16)), dst, {p, e.index(c)});
    }
  });
}

/// The rhs of S = Q K^T from K's rows: dst[p][2r + t] = bf16(K[r][2p + t]). As 32-bit words,
/// K's bf16 rows are [keys][pairs] and dst is [pairs][keys]: 16 x 16 word squares transposed
/// in registers. Keys at or past count are 0 (their rows are not read).
void packKeyPairsFromSource(Emit &e, const SourceRows &source, Value dst) {
  ArrayRef<int64_t> shape = cast<MemRefType>(dst.getType()).getShape(); // [d/2][2 keys]
  constexpr int64_t lanes = 16;
  int64_t pairs = shape[0], keys = shape[1] / 2;
  Type i32 = e.b.getI32Type(), bf16 = e.b.getBF16Type();
  auto square = VectorType::get({lanes, lanes}, i32);
  Value lastRow = arith::SubIOp::create(e.b, e.loc, source.count, e.index(1));
  e.loop(e.index(0), e.index(keys), lanes, [&](Value r0) {
    Value anyValid =
        arith::CmpIOp::create(e.b, e.loc, arith::CmpIPredicate::slt, r0, source.count);
    scf::IfOp::create(
        e.b, e.loc, anyValid,
        [&](OpBuilder &, Location) {
          for (int64_t p0 = 0; p0 < pairs; p0 += lanes) {
            Value block = e.zeros(square);
            for (int64_t i = 0; i < lanes; ++i) {
              Value r = e.add(r0, e.index(i));
              Value valid =
                  arith::CmpIOp::create(e.b, e.loc, arith::CmpIPredicate::slt, r, source.count);
              Value safe = arith::MinSIOp::create(e.b, e.loc, r, lastRow);
              Value words = vector::BitCastOp::create(
                  e.b, e.loc, VectorType::get({lanes}, i32),
                  e.toBf16(source.row(e, safe, 2 * p0, 2 * lanes)));
              words = arith::SelectOp::create(e.b, e.loc, valid, words,
                                              e.zeros(VectorType::get({lanes}, i32)));
              block = vector::InsertOp::create(e.b, e.loc, words, block, i);
            }
            Value transposed =
                vector::TransposeOp::create(e.b, e.loc, block, ArrayRef<int64_t>{1, 0});
            for (int64_t i = 0; i < lanes; ++i) {
              Value row = vector::BitCastOp::create(
                  e.b, e.loc, VectorType::get({2 * lanes}, bf16),
                  vector::ExtractOp::create(e.b, e.loc, transposed, i));
              e.storeVector(row, dst,
                            {e.index(p0 + i), arith::MulIOp::create(e.b, e.loc, r0, e.index(2))});
            }
          }
          scf::YieldOp::create(e.b, e.loc);
        },
        [&](OpBuilder &, Location) {
          Value zeros = e.zeros(VectorType::get({2 * lanes}, bf16));
          Value column = arith::MulIOp::create(e.b, e.loc, r0, e.index(2));
          e.loop(pairs, [&](Value p) { e.storeVector(zeros, dst, {p, column}); });
          scf::YieldOp::create(e.b, e.loc);
        });
  });
}

/// The one tile_load that fills `tile` if `product` is the tile's only reader and the load
/// comes before it (in its block or an enclosing one), else null.
TileLoadOp soleLoadFor(Value tile, TileMatmulOp product) {
  if (!tile.getDefiningOp<memref::AllocaOp>() && !tile.getDefiningOp<memref::AllocOp>())
    return nullptr;
  TileLoadOp load;
  int reads = 0;
  for (OpOperand &use : tile.getUses()) {
    Operation *user = use.getOwner();
    if (auto candidate = dyn_cast<TileLoadOp>(user); candidate && candidate.getTile() == tile) {
      if (load)
        return nullptr;
      load = candidate;
    } else if (user == product.getOperation()) {
      ++reads;
    } else if (!isa<memref::DeallocOp>(user)) {
      return nullptr;
    }
  }
  if (!load || reads != 1 || load.getMultiplierAttr())
    return nullptr;
  Operation *ancestor = load->getBlock()->findAncestorOpInBlock(*product);
  return ancestor && load->isBeforeInBlock(ancestor) ? load : nullptr;
}

bool isConstantAtLeast(Value value, int64_t bound) {
  APInt constant;
  return matchPattern(value, m_ConstantInt(&constant)) && constant.getSExtValue() >= bound;
}
} // namespace

void packLoadedAmxOperands(ModuleOp module, VectorTarget target, AmxPackedOperands &packed) {
  if (target.bf16Products != Bf16Products::Amx)
    return;
  SmallVector<TileMatmulOp> products;
  module.walk([&](TileMatmulOp op) {
    if (isAmxProduct(op, target))
      products.push_back(op);
  });
  OpBuilder builder(module.getContext());
  for (TileMatmulOp op : products) {
    ArrayRef<int64_t> acc = shapeOf(op.getAcc());
    int64_t m = acc[0], n = acc[1], k = shapeOf(op.getRhs())[0];
    auto sourceOf = [&](TileLoadOp load, int64_t rows) {
      builder.setInsertionPoint(load);
      Emit e{builder, load.getLoc()};
      Value count = arith::MaxSIOp::create(
          builder, e.loc, arith::MinSIOp::create(builder, e.loc, load.getCount(), e.index(rows)),
          e.index(0));
      return SourceRows{load.getSource(), load.getBatch(), load.getHead(), load.getStart(),
                        count};
    };
    std::pair<Value, Value> operands;
    // lhs [m][k] from rows (q): the reduction runs over the whole row.
    TileLoadOp lhsLoad = op.getTransposeLhs() ? nullptr : soleLoadFor(op.getLhs(), op);
    if (lhsLoad && !lhsLoad.getTranspose() && isConstantAtLeast(op.getDepth(), k)) {
      SourceRows source = sourceOf(lhsLoad, m);
      Emit e{builder, lhsLoad.getLoc()};
      Value buffer = allocBf16Buffer(builder, lhsLoad, {m, k});
      packRowsFromSource(e, source, buffer, target.lanes);
      operands.first = buffer;
      lhsLoad.erase();
    }
    // rhs [k][n]: from rows (v, the reduction over the valid rows) or transposed (k^T, over
    // the whole row).
    TileLoadOp rhsLoad = soleLoadFor(op.getRhs(), op);
    if (rhsLoad && (rhsLoad.getTranspose() ? isConstantAtLeast(op.getDepth(), k)
                                           : op.getDepth() == rhsLoad.getCount())) {
      SourceRows source = sourceOf(rhsLoad, rhsLoad.getTranspose() ? n : k);
      Emit e{builder, rhsLoad.getLoc()};
      Value buffer = allocBf16Buffer(builder, rhsLoad, {k / 2, 2 * n});
      if (rhsLoad.getTranspose())
        packKeyPairsFromSource(e, source, buffer);
      else
        packRowPairsFromSource(e, source, buffer, target.lanes);
      operands.second = buffer;
      rhsLoad.erase();
    }
    if (operands.first || operands.second)
      packed[op.getOperation()] = operands;
  }
}

void populateTileMatmulAmxPatterns(RewritePatternSet &patterns, VectorTarget target,
                                   const AmxPackedOperands *packed) {
  patterns.add<LowerMatmulAmx>(patterns.getContext(), target, packed);
}
} // namespace mlir::attn
