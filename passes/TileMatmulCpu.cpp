// tile_matmul on the CPU: register-blocked micro-kernels over the host's vector width.
#include "dialects/attn/AttnDialect.h"
#include "passes/CpuTileLowering.h"

namespace mlir::attn {
namespace {
/// acc (+)= alpha op(lhs) rhs as register-blocked micro-kernels: `rowsPerBlock` rows times
/// `vectorsPerBlock` host vectors of accumulators stay in registers across the whole
/// reduction; per reduction step it loads that many rhs vectors and broadcasts one lhs
/// element per row (FMA-bound, not load-bound).
struct LowerMatmul : OpRewritePattern<TileMatmulOp> {
  LowerMatmul(MLIRContext *context, VectorTarget target)
      : OpRewritePattern(context), target(target) {}

  LogicalResult matchAndRewrite(TileMatmulOp op, PatternRewriter &rewriter) const override {
    Emit e{rewriter, op.getLoc()};
    ArrayRef<int64_t> acc = shapeOf(op.getAcc());
    int64_t m = acc[0], n = acc[1], k = shapeOf(op.getRhs())[0];
    // Column chunks of the host width (a narrower last one when n is not a multiple).
    SmallVector<int64_t> chunkWidths;
    for (int64_t c = 0; c < n; c += target.lanes)
      chunkWidths.push_back(std::min(target.lanes, n - c));
    // Accumulators: `rows x vectors` of them plus one rhs vector per column vector and a
    // broadcast must fit the register file. Among the blocks that fit, the one loading the
    // fewest bytes per FMA (rhs vectors stream from the packed tile; lhs elements are
    // broadcasts) wins: 6 x 4 on AVX-512 (24 accumulators), 6 x 2 on AVX2.
    int64_t chunkCount = chunkWidths.size();
    int64_t vectorsPerBlock = 1, rowsPerBlock = 1;
    double bestCost = 1e30;
    for (int64_t vectors = 1; vectors <= std::min<int64_t>(4, chunkCount); ++vectors)
      for (int64_t rows = 1; rows <= std::min<int64_t>(m, 12); ++rows) {
        if (rows * vectors + vectors + 2 > target.registers)
          continue;
        // Loads per FMA, plus a small penalty for a remainder block of rows or columns
        // (measured on AVX-512: 6 x 4 with a remainder beats 4 x 4 by ~5 %).
        double cost = double(rows + vectors) / double(rows * vectors);
        if (m % rows != 0)
          cost += 0.05;
        if (chunkCount % vectors != 0)
          cost += 0.05;
        if (cost < bestCost - 1e-9) {
          bestCost = cost;
          vectorsPerBlock = vectors;
          rowsPerBlock = rows;
        }
      }
    if (target.microKernelRows > 0 && target.microKernelVectors > 0) {
      rowsPerBlock = std::min<int64_t>(target.microKernelRows, m);
      vectorsPerBlock = std::min<int64_t>(target.microKernelVectors, chunkCount);
    }

    auto emitBlock = [&](Value row0, int64_t rows, int64_t chunk0, int64_t chunks,
                         Value depth) {
      SmallVector<int64_t> widths(chunkWidths.begin() + chunk0,
                                  chunkWidths.begin() + chunk0 + chunks);
      SmallVector<Value> colStart;
      for (int64_t j = 0; j < chunks; ++j)
        colStart.push_back(e.index((chunk0 + j) * target.lanes));
      SmallVector<Value> rowIndex, rowScale;
      for (int64_t i = 0; i < rows; ++i) {
        rowIndex.push_back(e.add(row0, e.index(i)));
        if (op.getRowScale())
          rowScale.push_back(e.load(op.getRowScale(), {rowIndex.back()}));
      }
      bool alpha = op.getAlpha() && op.getAlpha()->convertToFloat() != 1.0f;
      auto old = [&](int64_t i, int64_t j) {
        Value v = e.loadVector(op.getAcc(), {rowIndex[i], colStart[j]}, widths[j]);
        if (op.getRowScale())
          v = arith::MulFOp::create(rewriter, e.loc, v, e.splat(rowScale[i], widths[j]));
        return v;
      };
      SmallVector<Value> init;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < chunks; ++j)
          init.push_back(op.getAccumulate() && !alpha ? old(i, j)
                                                      : e.splat(e.f32(0.0), widths[j]));
      auto reduction = scf::ForOp::create(
          rewriter, e.loc, e.index(0), depth, e.index(1), init,
          [&](OpBuilder &, Location, Value kk, ValueRange accs) {
            SmallVector<Value> rhs;
            for (int64_t j = 0; j < chunks; ++j)
              rhs.push_back(e.loadVector(op.getRhs(), {kk, colStart[j]}, widths[j]));
            SmallVector<Value> next;
            for (int64_t i = 0; i < rows; ++i) {
              Value a = op.getTransposeLhs() ? e.load(op.getLhs(), {kk, rowIndex[i]})
                                             : e.load(op.getLhs(), {rowIndex[i], kk});
              for (int64_t j = 0; j < chunks; ++j)
                next.push_back(vector::FMAOp::create(rewriter, e.loc, e.splat(a, widths[j]),
                                                     rhs[j], accs[i * chunks + j]));
            }
            scf::YieldOp::create(rewriter, e.loc, next);
          });
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < chunks; ++j) {
          Value v = reduction.getResult(i * chunks + j);
          if (alpha) {
            Value scaled = e.splat(e.f32(op.getAlpha()->convertToFloat()), widths[j]);
            v = op.getAccumulate() ? Value(vector::FMAOp::create(rewriter, e.loc, scaled, v, old(i, j)))
                                   : Value(arith::MulFOp::create(rewriter, e.loc, scaled, v));
          }
          e.storeVector(v, op.getAcc(), {rowIndex[i], colStart[j]});
        }
    };

    // Only the valid extents are computed: row blocks up to `rows`, the reduction up to
    // `depth` (past it the packed tiles are zero), column blocks that start before `cols`.
    int64_t fullRows = m - m % rowsPerBlock;
    Value rows = arith::MinSIOp::create(rewriter, e.loc, op.getRows(), e.index(m));
    Value depth = arith::MinSIOp::create(rewriter, e.loc, op.getDepth(), e.index(k));
    auto greater = [&](Value x, int64_t y) {
      return arith::CmpIOp::create(rewriter, e.loc, arith::CmpIPredicate::sgt, x, e.index(y));
    };
    auto when = [&](Value condition, function_ref<void()> body) {
      scf::IfOp::create(rewriter, e.loc, condition, [&](OpBuilder &, Location) {
        body();
        scf::YieldOp::create(rewriter, e.loc);
      });
    };
    // Row blocks covering [0, rows), rounded up to whole blocks, within the full blocks.
    Value blocksEnd = arith::MulIOp::create(
        rewriter, e.loc,
        arith::DivUIOp::create(
            rewriter, e.loc,
            arith::AddIOp::create(rewriter, e.loc, rows, e.index(rowsPerBlock - 1)),
            e.index(rowsPerBlock)),
        e.index(rowsPerBlock));
    blocksEnd = arith::MinSIOp::create(rewriter, e.loc, blocksEnd, e.index(fullRows));
    for (int64_t chunk0 = 0; chunk0 < chunkCount; chunk0 += vectorsPerBlock) {
      int64_t chunks = std::min(vectorsPerBlock, chunkCount - chunk0);
      when(greater(op.getCols(), chunk0 * target.lanes), [&] {
        if (fullRows > 0)
          e.loop(e.index(0), blocksEnd, rowsPerBlock,
                 [&](Value row0) { emitBlock(row0, rowsPerBlock, chunk0, chunks, depth); });
        if (fullRows < m)
          when(greater(rows, fullRows),
               [&] { emitBlock(e.index(fullRows), m - fullRows, chunk0, chunks, depth); });
      });
    }
    rewriter.eraseOp(op);
    return success();
  }

  VectorTarget target;
};

} // namespace

void populateTileMatmulCpuPatterns(RewritePatternSet &patterns, VectorTarget target) {
  patterns.add<LowerMatmul>(patterns.getContext(), target);
}
} // namespace mlir::attn
