// attn-tile: rewrites each attn.attention into the flash forward kernel, a loop over
// key/value blocks per (batch, head, query tile). Row-wise normalizers carry a running max
// and sum and rescale the accumulator (exp2, log2(e) folded into the scale); elementwise
// normalizers carry nothing and never rescale.
#include "dialects/attn/AttnDialect.h"
#include "passes/KernelEmitter.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <limits>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILE
#include "passes/Passes.h.inc"

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Emits `@<name>_fwd(q, k, v, o, lse, batch, head, queryStart)`.
void emitForwardKernel(KernelEmitter &e, Operation *anchor) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  MemRefType view4 = e.view4Type(), view3 = e.view3Type();
  func::FuncOp kernel =
      e.createKernel(kernelBaseName(e.op) + "_fwd", {view4, view4, view4, view4, view3}, anchor);
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], o = args[3], lse = args[4];
  Value batch = args[5], head = args[6], queryStart = args[7];
  int64_t tq = e.tiles.query, tk = e.tiles.key, d = e.headDim, dv = e.valueHeadDim;
  auto f32 = b.getF32Type();

  Value queryLength = e.dim(q, 2), keyLength = e.dim(k, 2);
  Value kvHead = e.kvHeadOf(head, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);
  Value rows = e.maxIndex(e.index(0), e.minIndex(e.index(tq),
                                                 arith::SubIOp::create(b, loc, queryLength,
                                                                       queryStart)));
  // Per-row state lives in stack tiles: O(tile * D), never S x S.
  Value rowMax = memref::AllocaOp::create(b, loc, MemRefType::get({tq}, f32));
  Value rowSum = memref::AllocaOp::create(b, loc, MemRefType::get({tq}, f32));
  Value acc = memref::AllocaOp::create(b, loc, MemRefType::get({tq, dv}, f32));
  Value queries = memref::AllocaOp::create(b, loc, MemRefType::get({tq, d}, f32));
  Value scores = memref::AllocaOp::create(b, loc, MemRefType::get({tk}, f32));
  Value zero = e.index(0), one = e.index(1);

  scf::ForOp::create(b, loc, zero, rows, one, ValueRange{},
                     [&](OpBuilder &, Location, Value r, ValueRange) {
                       Value row = arith::AddIOp::create(b, loc, queryStart, r);
                       memref::StoreOp::create(b, loc, e.f32(kNegInf), rowMax, r);
                       memref::StoreOp::create(b, loc, e.f32(0.0), rowSum, r);
                       e.storeRow(e.zeros(dv), acc, {r});
                       Value qRow = e.loadRow(q, {batch, head, row}, d);
                       Value scaled = arith::MulFOp::create(
                           b, loc, qRow, e.splat(e.f32(e.queryMultiplier()), d));
                       e.storeRow(scaled, queries, {r});
                       scf::YieldOp::create(b, loc);
                     });

  // Keys any row of the tile may see: both mask bounds grow with the row, so the first row
  // gives the low end and the last row the high end (causal/window block skipping).
  Value lastRow = arith::SubIOp::create(
      b, loc, arith::AddIOp::create(b, loc, queryStart, rows), one);
  Value tileLo = e.keyRangeForRow(queryStart, zero, keyLength).first;
  Value tileHi = e.keyRangeForRow(lastRow, zero, keyLength).second;

  // The flash loop over key/value blocks.
  scf::ForOp::create(b, loc, tileLo, tileHi, e.index(tk), ValueRange{},
                     [&](OpBuilder &, Location, Value blockStart, ValueRange) {
    Value blockEnd =
        e.minIndex(arith::AddIOp::create(b, loc, blockStart, e.index(tk)), tileHi);
    scf::ForOp::create(b, loc, zero, rows, one, ValueRange{},
                       [&](OpBuilder &, Location, Value r, ValueRange) {
      Value row = arith::AddIOp::create(b, loc, queryStart, r);
      auto [lo, hi] = e.keyRangeForRow(row, blockStart, blockEnd);
      Value nonEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, lo, hi);
      scf::IfOp::create(b, loc, nonEmpty, [&](OpBuilder &, Location) {
        Value qRow = e.loadRow(queries, {r}, d);
        auto scoreAt = [&](Value key) {
          Value raw = e.dot(qRow, e.loadRow(k, {batch, kvHead, key}, d));
          return e.score(raw, batch, head, row, key, /*wantDerivative=*/false)->first;
        };
        auto accumulate = [&](Value accRow, Value p, Value key) -> Value {
          Value vRow = e.loadRow(v, {batch, kvHead, key}, dv);
          return vector::FMAOp::create(b, loc, e.splat(p, dv), vRow, accRow);
        };
        Value accRow = e.loadRow(acc, {r}, dv);
        if (e.rowWise) {
          // Pass 1: scores of the block and their max.
          auto maxLoop = scf::ForOp::create(
              b, loc, lo, hi, one, ValueRange{e.f32(kNegInf)},
              [&](OpBuilder &, Location, Value key, ValueRange iter) {
                Value s = scoreAt(key);
                Value slot = arith::SubIOp::create(b, loc, key, blockStart);
                memref::StoreOp::create(b, loc, s, scores, slot);
                scf::YieldOp::create(b, loc, ValueRange{arith::MaximumFOp::create(b, loc, iter[0], s)});
              });
          Value oldMax = memref::LoadOp::create(b, loc, rowMax, r);
          Value newMax = arith::MaximumFOp::create(b, loc, oldMax, maxLoop.getResult(0));
          // A block whose scores are all -inf (masked by a score_mod) leaves the row as it is.
          Value shift = e.safeShift(newMax);
          Value correction =
              math::Exp2Op::create(b, loc, arith::SubFOp::create(b, loc, oldMax, shift));
          Value rescaled = arith::MulFOp::create(b, loc, accRow, e.splat(correction, dv));
          // Pass 2: p = exp2(s - max), summed and accumulated into p v.
          auto sumLoop = scf::ForOp::create(
              b, loc, lo, hi, one, ValueRange{e.f32(0.0), rescaled},
              [&](OpBuilder &, Location, Value key, ValueRange iter) {
                Value slot = arith::SubIOp::create(b, loc, key, blockStart);
                Value s = memref::LoadOp::create(b, loc, scores, slot);
                Value shifted = arith::SubFOp::create(b, loc, s, shift);
                Value p = e.zeroWhereMasked(
                    e.normalizer.emitProbability(b, loc, shifted, keyLengthF32,
                                                 e.op.getNormalizerBody()),
                    s);
                Value sum = arith::AddFOp::create(b, loc, iter[0], p);
                scf::YieldOp::create(b, loc, ValueRange{sum, accumulate(iter[1], p, key)});
              });
          Value oldSum = memref::LoadOp::create(b, loc, rowSum, r);
          Value newSum = arith::AddFOp::create(
              b, loc, arith::MulFOp::create(b, loc, oldSum, correction), sumLoop.getResult(0));
          memref::StoreOp::create(b, loc, newSum, rowSum, r);
          memref::StoreOp::create(b, loc, newMax, rowMax, r);
          e.storeRow(sumLoop.getResult(1), acc, {r});
        } else {
          // Elementwise: p = f(s) straight into the accumulator; no statistics, no rescale.
          auto loop = scf::ForOp::create(
              b, loc, lo, hi, one, ValueRange{accRow},
              [&](OpBuilder &, Location, Value key, ValueRange iter) {
                Value s = scoreAt(key);
                Value p = e.zeroWhereMasked(
                    e.normalizer.emitProbability(b, loc, s, keyLengthF32,
                                                 e.op.getNormalizerBody()),
                    s);
                scf::YieldOp::create(b, loc, ValueRange{accumulate(iter[0], p, key)});
              });
          e.storeRow(loop.getResult(0), acc, {r});
        }
        scf::YieldOp::create(b, loc);
      });
      scf::YieldOp::create(b, loc);
    });
    scf::YieldOp::create(b, loc);
  });

  // Finalize: divide by the row sum (row-wise) and store; a fully masked row gives 0.
  scf::ForOp::create(b, loc, zero, rows, one, ValueRange{},
                     [&](OpBuilder &, Location, Value r, ValueRange) {
    Value row = arith::AddIOp::create(b, loc, queryStart, r);
    Value out = e.loadRow(acc, {r}, dv);
    if (e.rowWise) {
      Value sum = memref::LoadOp::create(b, loc, rowSum, r);
      Value positive =
          arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, sum, e.f32(0.0));
      Value inverse = arith::SelectOp::create(
          b, loc, positive, arith::DivFOp::create(b, loc, e.f32(1.0), sum), e.f32(0.0));
      out = arith::MulFOp::create(b, loc, out, e.splat(inverse, dv));
      Value logSum = arith::AddFOp::create(b, loc, memref::LoadOp::create(b, loc, rowMax, r),
                                           math::Log2Op::create(b, loc, sum));
      Value rowLse = arith::SelectOp::create(b, loc, positive, logSum, e.f32(kNegInf));
      memref::StoreOp::create(b, loc, rowLse, lse, ValueRange{batch, head, row});
    }
    e.storeRow(out, o, {batch, head, row});
    scf::YieldOp::create(b, loc);
  });
  func::ReturnOp::create(b, loc);
}

struct AttnTilePass : impl::AttnTileBase<AttnTilePass> {
  using AttnTileBase::AttnTileBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<AttentionOp> ops;
    module.walk([&](AttentionOp op) { ops.push_back(op); });
    SetVector<Operation *> replacedFunctions;
    for (AttentionOp op : ops) {
      if (failed(KernelEmitter::checkLowerable(op)))
        return signalPassFailure();
      OpBuilder builder(op.getContext());
      KernelEmitter emitter(op, builder, TileSizes{queryTile, keyTile});
      auto parent = op->getParentOfType<func::FuncOp>();
      emitForwardKernel(emitter, parent ? parent.getOperation() : op.getOperation());
      if (parent)
        replacedFunctions.insert(parent);
    }
    // The kernels replace the tensor-level functions that held the ops.
    for (Operation *function : replacedFunctions)
      function->erase();
  }
};
} // namespace
} // namespace mlir::attn
