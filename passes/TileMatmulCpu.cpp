// tile_matmul on the CPU: register-blocked micro-kernels over the host's vector width, as f32
// FMAs or, with bf16 products on an AVX-512 host, AVX512-BF16 pair dot products.
#include "dialects/attn/AttnDialect.h"
#include "passes/CpuTileLowering.h"
#include "passes/KernelEmitter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"

namespace mlir::attn {
namespace {
/// The bf16 copies of a product's operands, laid out for vdpbf16ps, which multiplies pairs of
/// consecutive reduction elements: lane c of a dot gets lhs pair p times rhs pair (p, c).
struct Bf16Operands {
  Value lhs; ///< [m][k]: row i's pairs contiguous; with transpose_lhs [k/2][2m], pair p of row i at [p][2i]
  Value rhs; ///< [k/2][2n]: pair p of column c at [p][2c], [p][2c + 1]
};

/// The bf16 pair at `indices` of `buffer` in every 32-bit lane of a `width`-lane vector.
Value broadcastPair(Emit &e, Value buffer, ValueRange indices, int64_t width) {
  Type bf16 = e.b.getBF16Type(), i32 = e.b.getI32Type();
  Value pair = vector::LoadOp::create(e.b, e.loc, VectorType::get({2}, bf16), buffer, indices);
  Value word = vector::BitCastOp::create(e.b, e.loc, VectorType::get({1}, i32), pair);
  Value scalar = vector::ExtractOp::create(e.b, e.loc, word, 0);
  return vector::BitCastOp::create(e.b, e.loc, VectorType::get({2 * width}, bf16),
                                   e.splat(scalar, width));
}
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

    // bf16 products: both operands rounded to bf16 once per call, packed in pairs along the
    // reduction, one vdpbf16ps per pair (twice the FMA's multiply-adds). vdpbf16ps has 4, 8 and
    // 16 f32 lanes; an odd reduction length or another column width stays on f32 FMAs.
    Value depth = arith::MinSIOp::create(rewriter, e.loc, op.getDepth(), e.index(k));
    bool bf16 = target.bf16Products == Bf16Products::Avx512 && target.lanes == 16 && k % 2 == 0 &&
                llvm::all_of(chunkWidths, [](int64_t w) { return w == 4 || w == 8 || w == 16; });
    Bf16Operands packed;
    // With bf16 the reduction counts pairs of the depth, the odd last one half zero.
    Value pairs = bf16 ? Value(arith::DivUIOp::create(rewriter, e.loc, e.add(depth, e.index(1)),
                                                      e.index(2)))
                       : Value();
    if (bf16) {
      packed.rhs = allocBf16Buffer(rewriter, op, {k / 2, 2 * n});
      packRowPairs(e, op.getRhs(), packed.rhs, pairs, depth, target.lanes);
      if (op.getTransposeLhs()) {
        packed.lhs = allocBf16Buffer(rewriter, op, {k / 2, 2 * m});
        packRowPairs(e, op.getLhs(), packed.lhs, pairs, depth, target.lanes);
      } else {
        packed.lhs = allocBf16Buffer(rewriter, op, {m, k});
        packRows(e, op.getLhs(), packed.lhs, Value(), target.lanes);
      }
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
      // Without accumulate the accumulators start at `init` (0 when absent); with alpha it is
      // added after the scaling.
      auto start = [&](int64_t j) {
        return e.splat(op.getInit() && !alpha ? op.getInit() : e.f32(0.0), widths[j]);
      };
      SmallVector<Value> init;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < chunks; ++j)
          init.push_back(op.getAccumulate() && !alpha ? old(i, j) : start(j));
      auto reduction = scf::ForOp::create(
          rewriter, e.loc, e.index(0), bf16 ? pairs : depth, e.index(1), init,
          [&](OpBuilder &, Location, Value kk, ValueRange accs) {
            if (bf16) {
              // kk counts pairs: lhs pair (row, kk) times rhs pairs (kk, columns).
              SmallVector<Value> rhs;
              for (int64_t j = 0; j < chunks; ++j)
                rhs.push_back(vector::LoadOp::create(
                    rewriter, e.loc, VectorType::get({2 * widths[j]}, rewriter.getBF16Type()),
                    packed.rhs, ValueRange{kk, e.index(2 * (chunk0 + j) * target.lanes)}));
              Value pairColumn = arith::MulIOp::create(rewriter, e.loc, kk, e.index(2));
              SmallVector<Value> next;
              for (int64_t i = 0; i < rows; ++i) {
                DenseMap<int64_t, Value> broadcasts; // by lane count
                for (int64_t j = 0; j < chunks; ++j) {
                  Value &a = broadcasts[widths[j]];
                  if (!a)
                    a = op.getTransposeLhs()
                            ? broadcastPair(e, packed.lhs,
                                            {kk, arith::MulIOp::create(rewriter, e.loc,
                                                                       rowIndex[i], e.index(2))},
                                            widths[j])
                            : broadcastPair(e, packed.lhs, {rowIndex[i], pairColumn}, widths[j]);
                  next.push_back(x86vector::DotBF16Op::create(rewriter, e.loc,
                                                              accs[i * chunks + j], a, rhs[j]));
                }
              }
              scf::YieldOp::create(rewriter, e.loc, next);
              return;
            }
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
                : op.getInit()     ? Value(vector::FMAOp::create(rewriter, e.loc, scaled, v,
                                                                 e.splat(op.getInit(), widths[j])))
                                   : Value(arith::MulFOp::create(rewriter, e.loc, scaled, v));
          }
          e.storeVector(v, op.getAcc(), {rowIndex[i], colStart[j]});
        }
    };

    // Only the valid extents are computed: row blocks up to `rows`, the reduction up to
    // `depth` (past it the packed tiles are zero), column blocks that start before `cols`.
    int64_t fullRows = m - m % rowsPerBlock;
    Value rows = arith::MinSIOp::create(rewriter, e.loc, op.getRows(), e.index(m));
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

Value allocBf16Buffer(OpBuilder &builder, Operation *op, ArrayRef<int64_t> shape) {
  auto function = op->getParentOfType<func::FuncOp>();
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToStart(&function.front());
  auto type = MemRefType::get(shape, builder.getBF16Type());
  Location loc = op->getLoc();
  IntegerAttr alignment = builder.getI64IntegerAttr(64);
  if (type.getNumElements() * 2 <= KernelEmitter::kMaxStackTileBytes)
    return memref::AllocaOp::create(builder, loc, type, alignment);
  Value buffer = memref::AllocOp::create(builder, loc, type, alignment);
  function.walk([&](func::ReturnOp ret) {
    builder.setInsertionPoint(ret);
    memref::DeallocOp::create(builder, loc, buffer);
  });
  return buffer;
}

void packRowPairs(Emit &e, Value src, Value dst, Value pairs, Value depth, int64_t lanes) {
  int64_t cols = shapeOf(src)[1];
  e.loop(e.index(0), pairs, 1, [&](Value p) {
    Value even = arith::MulIOp::create(e.b, e.loc, p, e.index(2));
    Value odd = e.add(even, e.index(1));
    auto row = [&](Value r, int64_t c, int64_t width) {
      Value valid = arith::CmpIOp::create(e.b, e.loc, arith::CmpIPredicate::slt, r, depth);
      Value values = e.toBf16(e.loadVector(src, {r, e.index(c)}, width));
      return arith::SelectOp::create(e.b, e.loc, valid, values,
                                     e.zeros(cast<VectorType>(values.getType())));
    };
    for (int64_t c = 0; c < cols; c += lanes) {
      int64_t width = std::min(lanes, cols - c);
      e.storeVector(vector::InterleaveOp::create(e.b, e.loc, row(even, c, width),
                                                 row(odd, c, width)),
                    dst, {p, e.index(2 * c)});
    }
  });
}

void packRows(Emit &e, Value src, Value dst, Value depth, int64_t lanes) {
  ArrayRef<int64_t> shape = shapeOf(src);
  e.loop(shape[0], [&](Value i) {
    for (int64_t c = 0; c < shape[1]; c += lanes) {
      int64_t width = std::min(lanes, shape[1] - c);
      Value values = e.toBf16(e.loadVector(src, {i, e.index(c)}, width));
      if (depth) {
        Value valid = vector::CreateMaskOp::create(
            e.b, e.loc, VectorType::get({width}, e.b.getI1Type()),
            ValueRange{arith::SubIOp::create(e.b, e.loc, depth, e.index(c))});
        values = arith::SelectOp::create(e.b, e.loc, valid, values,
                                         e.zeros(cast<VectorType>(values.getType())));
      }
      e.storeVector(values, dst, {i, e.index(c)});
    }
  });
}

void populateTileMatmulCpuPatterns(RewritePatternSet &patterns, VectorTarget target) {
  patterns.add<LowerMatmul>(patterns.getContext(), target);
}
} // namespace mlir::attn
