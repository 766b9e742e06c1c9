// attn-derive-backward: emits the tiled backward kernels of each attn.attention from its
// normalizer's gradient (NormalizerAttrInterface::emitScoreGradient) and the symbolic
// derivative of score_mod. P is recomputed per tile; nothing of size S x S is stored.
//   dQ kernel, per (batch, query head, query tile):   dQ_i = scale * sum_j dS_ij k_j
//   dK/dV kernel, per (batch, kv head, key tile):     dV_j = sum_(h in group, i) p_ij dO_i
//                                                     dK_j = scale * sum_(h, i) dS_ij q_i
// with dP_ij = dO_i . v_j and dS from the normalizer (softmax: p (dP - rowsum(dO * O))).
#include "dialects/attn/AttnDialect.h"
#include "passes/KernelEmitter.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNDERIVEBACKWARD
#include "passes/Passes.h.inc"

namespace {
/// The quantities of one (query row i, key j) pair the gradients are made of.
struct PairGradient {
  Value prob;         // p_ij
  Value gradRawScore; // dS_ij times d(score_mod)/ds: the gradient w.r.t. scale * q_i . k_j
};

/// Per-row inputs of the backward: q_i (raw and pre-multiplied), dO_i, lse_i, delta_i.
struct RowInputs {
  Value query, scaledQuery, gradOut, lse, delta;
};

class BackwardEmitter {
public:
  BackwardEmitter(KernelEmitter &e) : e(e), b(e.b), loc(e.loc) {}

  RowInputs loadRow(Value q, Value gradOut, Value lse, Value delta, Value batch, Value head,
                    Value row) {
    RowInputs in;
    in.query = e.loadRow(q, {batch, head, row}, e.headDim);
    in.scaledQuery = arith::MulFOp::create(b, loc, in.query,
                                           e.splat(e.f32(e.queryMultiplier()), e.headDim));
    in.gradOut = e.loadRow(gradOut, {batch, head, row}, e.valueHeadDim);
    if (e.rowWise) {
      in.lse = memref::LoadOp::create(b, loc, lse, ValueRange{batch, head, row});
      in.delta = memref::LoadOp::create(b, loc, delta, ValueRange{batch, head, row});
    }
    return in;
  }

  /// Recomputes p_ij and derives dS_ij for one pair.
  FailureOr<PairGradient> pair(const RowInputs &in, Value kRow, Value vRow, Value batch,
                               Value head, Value row, Value key, Value keyLengthF32) {
    Value raw = e.dot(in.scaledQuery, kRow);
    auto scored = e.score(raw, batch, head, row, key, /*wantDerivative=*/true);
    if (failed(scored))
      return failure();
    auto [score, modDerivative] = *scored;
    Region &body = e.op.getNormalizerBody();
    // Row-wise: p = exp2(s - lse) is the normalized probability.
    Value shifted = e.rowWise ? Value(arith::SubFOp::create(b, loc, score, in.lse)) : score;
    Value prob = e.normalizer.emitProbability(b, loc, shifted, keyLengthF32, body);
    Value gradProb = e.dot(in.gradOut, vRow);
    auto gradScore = e.normalizer.emitScoreGradient(b, loc, score, prob, gradProb, in.delta,
                                                    keyLengthF32, body);
    if (failed(gradScore))
      return failure();
    Value gradRaw = *gradScore;
    if (modDerivative)
      gradRaw = arith::MulFOp::create(b, loc, gradRaw, modDerivative);
    // A masked score (-inf) has p = 0 and no gradient; in a row with no allowed key lse is
    // -inf too, and exp2(s - lse) would be NaN.
    return PairGradient{e.zeroWhereMasked(prob, score), e.zeroWhereMasked(gradRaw, score)};
  }

  KernelEmitter &e;
  OpBuilder &b;
  Location loc;
};

/// `@<name>_bwd_dq(q, k, v, dO, lse, delta, dQ, batch, head, queryStart)`.
LogicalResult emitQueryGradientKernel(KernelEmitter &e, Operation *anchor) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  MemRefType view4 = e.view4Type(), view3 = e.view3Type();
  func::FuncOp kernel = e.createKernel(kernelBaseName(e.op) + "_bwd_dq",
                                       {view4, view4, view4, view4, view3, view3, view4}, anchor);
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], gradOut = args[3], lse = args[4],
        delta = args[5], gradQuery = args[6], batch = args[7], head = args[8],
        queryStart = args[9];
  int64_t d = e.headDim, dv = e.valueHeadDim;
  Value queryLength = e.dim(q, 2), keyLength = e.dim(k, 2);
  Value kvHead = e.kvHeadOf(head, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);
  Value zero = e.index(0), one = e.index(1);
  Value rowEnd = e.minIndex(arith::AddIOp::create(b, loc, queryStart, e.index(e.tiles.query)),
                            queryLength);
  BackwardEmitter backward(e);
  LogicalResult status = success();

  scf::ForOp::create(b, loc, queryStart, rowEnd, one, ValueRange{},
                     [&](OpBuilder &, Location, Value row, ValueRange) {
    RowInputs in = backward.loadRow(q, gradOut, lse, delta, batch, head, row);
    auto [lo, hi] = e.keyRangeForRow(row, zero, keyLength);
    auto loop = scf::ForOp::create(
        b, loc, lo, hi, one, ValueRange{e.zeros(d)},
        [&](OpBuilder &, Location, Value key, ValueRange iter) {
          Value kRow = e.loadRow(k, {batch, kvHead, key}, d);
          Value vRow = e.loadRow(v, {batch, kvHead, key}, dv);
          auto grad = backward.pair(in, kRow, vRow, batch, head, row, key, keyLengthF32);
          Value next = iter[0];
          if (succeeded(grad))
            next = vector::FMAOp::create(b, loc, e.splat(grad->gradRawScore, d), kRow, iter[0]);
          else
            status = failure();
          scf::YieldOp::create(b, loc, ValueRange{next});
        });
    Value scaled = arith::MulFOp::create(b, loc, loop.getResult(0), e.splat(e.f32(e.scale), d));
    e.storeRow(scaled, gradQuery, {batch, head, row});
    scf::YieldOp::create(b, loc);
  });
  func::ReturnOp::create(b, loc);
  return status;
}

/// `@<name>_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV, batch, kvHead, keyStart)`: sums over
/// the query heads of the group, so GQA needs no atomics and no K/V copies.
LogicalResult emitKeyValueGradientKernel(KernelEmitter &e, Operation *anchor) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  MemRefType view4 = e.view4Type(), view3 = e.view3Type();
  func::FuncOp kernel =
      e.createKernel(kernelBaseName(e.op) + "_bwd_dkdv",
                     {view4, view4, view4, view4, view3, view3, view4, view4}, anchor);
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], gradOut = args[3], lse = args[4],
        delta = args[5], gradKey = args[6], gradValue = args[7], batch = args[8],
        kvHead = args[9], keyStart = args[10];
  int64_t tk = e.tiles.key, d = e.headDim, dv = e.valueHeadDim;
  auto f32 = b.getF32Type();
  Value queryLength = e.dim(q, 2), keyLength = e.dim(k, 2);
  Value group = arith::DivSIOp::create(b, loc, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);
  Value zero = e.index(0), one = e.index(1);
  Value keyEnd = e.minIndex(arith::AddIOp::create(b, loc, keyStart, e.index(tk)), keyLength);
  Value keys = arith::SubIOp::create(b, loc, keyEnd, keyStart);

  Value gradKeyTile = memref::AllocaOp::create(b, loc, MemRefType::get({tk, d}, f32));
  Value gradValueTile = memref::AllocaOp::create(b, loc, MemRefType::get({tk, dv}, f32));
  scf::ForOp::create(b, loc, zero, keys, one, ValueRange{},
                     [&](OpBuilder &, Location, Value c, ValueRange) {
                       e.storeRow(e.zeros(d), gradKeyTile, {c});
                       e.storeRow(e.zeros(dv), gradValueTile, {c});
                       scf::YieldOp::create(b, loc);
                     });
  auto [rowLo, rowHi] = e.queryRangeForKeys(keyStart, keyEnd, queryLength);
  BackwardEmitter backward(e);
  LogicalResult status = success();

  scf::ForOp::create(b, loc, zero, group, one, ValueRange{},
                     [&](OpBuilder &, Location, Value member, ValueRange) {
    Value head = arith::AddIOp::create(b, loc, arith::MulIOp::create(b, loc, kvHead, group),
                                       member);
    scf::ForOp::create(b, loc, rowLo, rowHi, one, ValueRange{},
                       [&](OpBuilder &, Location, Value row, ValueRange) {
      auto [lo, hi] = e.keyRangeForRow(row, keyStart, keyEnd);
      Value nonEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, lo, hi);
      scf::IfOp::create(b, loc, nonEmpty, [&](OpBuilder &, Location) {
        RowInputs in = backward.loadRow(q, gradOut, lse, delta, batch, head, row);
        scf::ForOp::create(b, loc, lo, hi, one, ValueRange{},
                           [&](OpBuilder &, Location, Value key, ValueRange) {
          Value kRow = e.loadRow(k, {batch, kvHead, key}, d);
          Value vRow = e.loadRow(v, {batch, kvHead, key}, dv);
          auto grad = backward.pair(in, kRow, vRow, batch, head, row, key, keyLengthF32);
          if (failed(grad)) {
            status = failure();
          } else {
            Value slot = arith::SubIOp::create(b, loc, key, keyStart);
            Value dvRow = e.loadRow(gradValueTile, {slot}, dv);
            e.storeRow(vector::FMAOp::create(b, loc, e.splat(grad->prob, dv), in.gradOut, dvRow),
                       gradValueTile, {slot});
            Value dkRow = e.loadRow(gradKeyTile, {slot}, d);
            e.storeRow(
                vector::FMAOp::create(b, loc, e.splat(grad->gradRawScore, d), in.query, dkRow),
                gradKeyTile, {slot});
          }
          scf::YieldOp::create(b, loc);
        });
        scf::YieldOp::create(b, loc);
      });
      scf::YieldOp::create(b, loc);
    });
    scf::YieldOp::create(b, loc);
  });

  scf::ForOp::create(b, loc, zero, keys, one, ValueRange{},
                     [&](OpBuilder &, Location, Value c, ValueRange) {
    Value key = arith::AddIOp::create(b, loc, keyStart, c);
    Value dk = arith::MulFOp::create(b, loc, e.loadRow(gradKeyTile, {c}, d),
                                     e.splat(e.f32(e.scale), d));
    e.storeRow(dk, gradKey, {batch, kvHead, key});
    e.storeRow(e.loadRow(gradValueTile, {c}, dv), gradValue, {batch, kvHead, key});
    scf::YieldOp::create(b, loc);
  });
  func::ReturnOp::create(b, loc);
  return status;
}

struct AttnDeriveBackwardPass : impl::AttnDeriveBackwardBase<AttnDeriveBackwardPass> {
  using AttnDeriveBackwardBase::AttnDeriveBackwardBase;
  void runOnOperation() override {
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    for (AttentionOp op : ops) {
      if (failed(KernelEmitter::checkLowerable(op)))
        return signalPassFailure();
      auto parent = op->getParentOfType<func::FuncOp>();
      Operation *anchor = parent ? parent.getOperation() : op.getOperation();
      OpBuilder builder(op.getContext());
      KernelEmitter emitter(op, builder, TileSizes{queryTile, keyTile});
      if (failed(emitQueryGradientKernel(emitter, anchor)) ||
          failed(emitKeyValueGradientKernel(emitter, anchor)))
        return signalPassFailure();
    }
  }
};
} // namespace
} // namespace mlir::attn
