// attn-derive-backward: emits the tiled backward kernels of each attn.attention from the same
// tile ops as the forward. P is recomputed per tile from the LSE; nothing S x S is stored.
//   dQ kernel, per (batch, query head, query tile), over key blocks:
//     S = Q K^T, dP = dO V^T -> score_mod (and its derivative) -> mask -> P -> dS
//     dQ += dS K
//   dK/dV kernel, per (batch, kv head, key tile), over the group's query heads and blocks:
//     the same S, P, dP, dS, then dV += P^T dO, dK += dS^T Q (GQA summed without atomics)
// dS comes from the normalizer (NormalizerAttrInterface::emitScoreGradient) and the symbolic
// derivative of score_mod.
#include "dialects/attn/AttnDialect.h"
#include "passes/KernelEmitter.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNDERIVEBACKWARD
#include "passes/Passes.h.inc"

namespace {
/// The tiles and kernel arguments both backward kernels share.
struct BackwardTiles {
  Value queries, gradOut, lse, delta;  // per query block
  Value keysT, valuesT;                // per key block, transposed
  Value scores, probs, grads, modDerivative;
  /// With capture gradients: the scores before the score_mod.
  Value raw;

  BackwardTiles(KernelEmitter &e) {
    int64_t tq = e.tiles.query, tk = e.tiles.key;
    queries = e.allocTile({tq, e.headDim});
    gradOut = e.allocTile({tq, e.valueHeadDim});
    if (e.rowWise) {
      lse = e.allocTile({tq});
      delta = e.allocTile({tq});
    }
    keysT = e.allocTile({e.headDim, tk});
    valuesT = e.allocTile({e.valueHeadDim, tk});
    scores = e.allocTile({tq, tk});
    probs = e.allocTile({tq, tk});
    grads = e.allocTile({tq, tk});
    if (e.hasScoreMod)
      modDerivative = e.allocTile({tq, tk});
    if (!e.captureGradients.empty())
      raw = e.allocTile({tq, tk});
  }

  /// Loads a query block's dO and row statistics (q is loaded by the caller: the dQ kernel
  /// pre-multiplies it, the dK/dV kernel needs it raw).
  void loadRowInputs(KernelEmitter &e, Value gradOutView, Value lseView, Value deltaView,
                     Value batch, Value head, Value rowStart, Value rows) {
    TileLoadOp::create(e.b, e.loc, gradOutView, batch, head, rowStart, rows, gradOut, UnitAttr(), FloatAttr());
    loadRowStatistics(e, lseView, deltaView, batch, head, rowStart, rows);
  }
  void loadRowStatistics(KernelEmitter &e, Value lseView, Value deltaView, Value batch,
                         Value head, Value rowStart, Value rows) {
    OpBuilder &b = e.b;
    if (e.rowWise) {
      TileLoadOp::create(b, e.loc, lseView, batch, head, rowStart, rows, lse, UnitAttr(), FloatAttr());
      TileLoadOp::create(b, e.loc, deltaView, batch, head, rowStart, rows, delta, UnitAttr(), FloatAttr());
    }
  }

  /// S, dP, P and dS of one (query block, key block) pair; `alpha` multiplies Q K^T.
  /// `rows` query rows and `keys` keys of the blocks are valid.
  /// `kind` is the block's mask-region classification (null without a mask region).
  void scoresAndGradients(KernelEmitter &e, Value batch, Value head, Value rowStart,
                          Value keyStart, Value rows, Value keys, Value queryLength,
                          Value keyLength, Value keyLengthF32, float alpha, Value kind,
                          function_ref<void()> loadStatistics = {}) {
    OpBuilder &b = e.b;
    Location loc = e.loc;
    auto product = TileMatmulOp::create(b, loc, queries, keysT, scores, rows, e.index(e.headDim),
                                        keys, Value(), Value(), UnitAttr(), UnitAttr(), FloatAttr());
    if (alpha != 1.0f)
      product.setAlphaAttr(b.getF32FloatAttr(alpha));
    // dP = dO V^T before P: then each score's p and dS can be formed together from s and dp
    // (a GPU keeps the three score tiles in registers; this order keeps two alive, not three).
    TileMatmulOp::create(b, loc, gradOut, valuesT, grads, rows, e.index(e.valueHeadDim), keys,
                         Value(), Value(), UnitAttr(), UnitAttr(), FloatAttr());
    // With capture gradients, the mod's partial derivatives (in s and in each capture read)
    // come from tile_capture_gradient, which needs the scores the mod read.
    bool withCaptureGradients = !e.captureGradients.empty();
    if (withCaptureGradients)
      TileCopyOp::create(b, loc, scores, raw);
    e.scoreModTile(scores, rows, keys, batch, head, rowStart, keyStart,
                   withCaptureGradients ? Value() : modDerivative);
    Value needsMask = e.blockNeedsMask(rowStart, e.tiles.query, keyStart, e.tiles.key,
                                       queryLength, keyLength);
    scf::IfOp::create(b, loc, needsMask, [&](OpBuilder &, Location) {
      e.maskTile(scores, rowStart, keyStart, queryLength, keyLength);
      scf::YieldOp::create(b, loc);
    });
    e.maskRegionTile(kind, scores, rows, keys, batch, head, rowStart, keyStart);
    if (loadStatistics)
      loadStatistics();
    auto probabilities =
        TileProbabilitiesOp::create(b, loc, scores, rows, lse, keyLengthF32, probs,
                                    e.normalizer);
    e.copyNormalizerBody(probabilities.getNormalizerBody());
    auto gradient = TileScoreGradientOp::create(
        b, loc, scores, probs, grads, rows, delta,
        withCaptureGradients ? Value() : modDerivative, keyLengthF32, e.normalizer);
    e.copyNormalizerBody(gradient.getNormalizerBody());
    if (withCaptureGradients)
      e.captureGradientTile(raw, grads, rows, keys, batch, head, rowStart, keyStart);
  }
};

/// `@<name>_bwd_dq(q, k, v, dO, lse, delta, dQ, [kv_lengths,] [captures..., fault,]
/// [gradients of the f32 captures...,] [block map,] batch, head, queryStart)`: with
/// `captureGradients` (and a score_mod), it also accumulates the captures' gradients, each
/// score once.
void emitQueryGradientKernel(KernelEmitter &e, Operation *anchor, bool captureGradients,
                             bool blockMap) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  MemRefType view4 = e.view4Type(), view3 = e.view3Type();
  func::FuncOp kernel =
      e.createKernel(kernelBaseName(e.op) + "_bwd_dq",
                     {view4, view4, view4, view4, view3, view3, view4}, anchor, captureGradients,
                     blockMap);
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], gradOut = args[3], lse = args[4],
        delta = args[5], gradQuery = args[6], batch, head, queryStart;
  std::tie(batch, head, queryStart) = KernelEmitter::gridArguments(kernel);
  int64_t tq = e.tiles.query, tk = e.tiles.key;
  Value queryLength = e.dim(q, 2), keyLength = e.keyLengthOf(k, batch);
  Value kvHead = e.kvHeadOf(head, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);
  Value rows = e.validCount(queryStart, queryLength, tq);
  BackwardTiles tiles(e);
  Value keys = e.allocTile({tk, e.headDim});
  Value gradQueryTile = e.allocTile({tq, e.headDim});
  auto load = TileLoadOp::create(b, loc, q, batch, head, queryStart, rows, tiles.queries, UnitAttr(), FloatAttr());
  load.setMultiplierAttr(b.getF32FloatAttr(e.queryMultiplier()));
  tiles.loadRowInputs(e, gradOut, lse, delta, batch, head, queryStart, rows);
  TileFillOp::create(b, loc, gradQueryTile, b.getF32FloatAttr(0.0));

  auto [tileLo, tileHi] = e.keyRangeForTile(queryStart, rows, keyLength);
  if (e.blockMap)
    tileLo = e.alignDown(tileLo, tk);
  scf::ForOp::create(b, loc, tileLo, tileHi, e.index(tk), ValueRange{},
                     [&](OpBuilder &, Location, Value keyStart, ValueRange) {
    Value count = e.validCount(keyStart, keyLength, tk);
    e.unlessMaskedOut(rows, count, batch, head, queryStart, keyStart, [&](Value kind) {
      TileLoadOp::create(b, loc, k, batch, kvHead, keyStart, count, tiles.keysT, UnitAttr(), FloatAttr())
          .setTranspose(true);
      TileLoadOp::create(b, loc, k, batch, kvHead, keyStart, count, keys, UnitAttr(), FloatAttr());
      TileLoadOp::create(b, loc, v, batch, kvHead, keyStart, count, tiles.valuesT, UnitAttr(), FloatAttr())
          .setTranspose(true);
      tiles.scoresAndGradients(e, batch, head, queryStart, keyStart, rows, count, queryLength,
                               keyLength, keyLengthF32, 1.0f, kind);
      TileMatmulOp::create(b, loc, tiles.grads, keys, gradQueryTile, rows, count,
                           e.index(e.headDim), Value(), Value(), UnitAttr(), UnitAttr(), FloatAttr())
          .setAccumulate(true);
    });
    scf::YieldOp::create(b, loc);
  });
  TileStoreOp::create(b, loc, gradQueryTile, rows, gradQuery, batch, head, queryStart, Value(), FloatAttr())
      .setMultiplierAttr(b.getF32FloatAttr(e.scale));
  e.releaseTiles();
  func::ReturnOp::create(b, loc);
}

/// `@<name>_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV, [kv_lengths,] [captures..., fault,]
/// [block map,] batch, kvHead, keyStart)`:
/// sums over the query heads of the group, so GQA needs no atomics and no K/V copies.
void emitKeyValueGradientKernel(KernelEmitter &e, Operation *anchor, bool blockMap) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  MemRefType view4 = e.view4Type(), view3 = e.view3Type();
  func::FuncOp kernel =
      e.createKernel(kernelBaseName(e.op) + "_bwd_dkdv",
                     {view4, view4, view4, view4, view3, view3, view4, view4}, anchor,
                     /*withCaptureGradients=*/false, blockMap);
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], gradOut = args[3], lse = args[4],
        delta = args[5], gradKey = args[6], gradValue = args[7], batch, kvHead, keyStart;
  std::tie(batch, kvHead, keyStart) = KernelEmitter::gridArguments(kernel);
  int64_t tq = e.tiles.query, tk = e.tiles.key;
  Value queryLength = e.dim(q, 2), keyLength = e.keyLengthOf(k, batch);
  Value group = arith::DivSIOp::create(b, loc, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);
  Value zero = e.index(0), one = e.index(1);
  Value keys = e.validCount(keyStart, keyLength, tk);
  Value keyEnd = arith::AddIOp::create(b, loc, keyStart, keys);

  BackwardTiles tiles(e);
  Value gradKeyTile = e.allocTile({tk, e.headDim});
  Value gradValueTile = e.allocTile({tk, e.valueHeadDim});
  TileLoadOp::create(b, loc, k, batch, kvHead, keyStart, keys, tiles.keysT, UnitAttr(), FloatAttr()).setTranspose(true);
  TileLoadOp::create(b, loc, v, batch, kvHead, keyStart, keys, tiles.valuesT, UnitAttr(), FloatAttr())
      .setTranspose(true);
  TileFillOp::create(b, loc, gradKeyTile, b.getF32FloatAttr(0.0));
  TileFillOp::create(b, loc, gradValueTile, b.getF32FloatAttr(0.0));
  auto [rowLo, rowHi] = e.queryRangeForKeys(keyStart, keyEnd, queryLength);
  // The block map has an entry per query tile of the grid: the query blocks start on it.
  if (e.blockMap)
    rowLo = e.alignDown(rowLo, tq);

  // One flat loop over (group member, query block) pairs: a target that streams the query
  // blocks (the GPU's copy pipeline) runs one uniform pipeline for the whole group.
  Value span = arith::MaxSIOp::create(b, loc, arith::SubIOp::create(b, loc, rowHi, rowLo), zero);
  Value blocksPerHead = arith::DivSIOp::create(
      b, loc, arith::AddIOp::create(b, loc, span, e.index(tq - 1)), e.index(tq));
  Value blocks = arith::MulIOp::create(b, loc, blocksPerHead, group);
  // A key block wholly past its batch's kv_length has nothing to sum (its gradients stay
  // unwritten, like the padding rows of any block).
  if (e.keyLengths)
    blocks = arith::SelectOp::create(
        b, loc, arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, keys, zero), blocks,
        zero);
  Value safeBlocksPerHead = arith::MaxSIOp::create(b, loc, blocksPerHead, one);
  scf::ForOp::create(b, loc, zero, blocks, one, ValueRange{},
                     [&](OpBuilder &, Location, Value n, ValueRange) {
      Value member = arith::DivSIOp::create(b, loc, n, safeBlocksPerHead);
      Value inHead = arith::RemSIOp::create(b, loc, n, safeBlocksPerHead);
      Value head = arith::AddIOp::create(b, loc, arith::MulIOp::create(b, loc, kvHead, group),
                                         member);
      Value rowStart = arith::AddIOp::create(
          b, loc, rowLo, arith::MulIOp::create(b, loc, inHead, e.index(tq)));
      Value rows = e.validCount(rowStart, queryLength, tq);
      e.unlessMaskedOut(rows, keys, batch, head, rowStart, keyStart, [&](Value kind) {
        // Raw q: dK needs it unscaled; the scores get the multiplier as the product's alpha.
        TileLoadOp::create(b, loc, q, batch, head, rowStart, rows, tiles.queries, UnitAttr(), FloatAttr());
        TileLoadOp::create(b, loc, gradOut, batch, head, rowStart, rows, tiles.gradOut,
                           UnitAttr(), FloatAttr());
        // The block's row statistics are read where they are used, after both products: a
        // GPU holds them in registers and would carry them through the tensor-core work.
        tiles.scoresAndGradients(e, batch, head, rowStart, keyStart, rows, keys, queryLength,
                                 keyLength, keyLengthF32, e.queryMultiplier(), kind, [&] {
                                   tiles.loadRowStatistics(e, lse, delta, batch, head,
                                                           rowStart, rows);
                                 });
        auto valueUpdate =
            TileMatmulOp::create(b, loc, tiles.probs, tiles.gradOut, gradValueTile, keys, rows,
                                 e.index(e.valueHeadDim), Value(), Value(), UnitAttr(), UnitAttr(),
                                 FloatAttr());
        valueUpdate.setTransposeLhs(true);
        valueUpdate.setAccumulate(true);
        auto keyUpdate =
            TileMatmulOp::create(b, loc, tiles.grads, tiles.queries, gradKeyTile, keys, rows,
                                 e.index(e.headDim), Value(), Value(), UnitAttr(), UnitAttr(),
                                 FloatAttr());
        keyUpdate.setTransposeLhs(true);
        keyUpdate.setAccumulate(true);
      });
      scf::YieldOp::create(b, loc);
  });
  TileStoreOp::create(b, loc, gradKeyTile, keys, gradKey, batch, kvHead, keyStart, Value(), FloatAttr())
      .setMultiplierAttr(b.getF32FloatAttr(e.scale));
  TileStoreOp::create(b, loc, gradValueTile, keys, gradValue, batch, kvHead, keyStart, Value(), FloatAttr());
  e.releaseTiles();
  func::ReturnOp::create(b, loc);
}

/// Differentiates the score_mod (in s, and with `captureGradients` in each f32 capture read
/// too) and the normalizer once into a scratch block, so that an op without a derivative rule
/// is a diagnostic on the attention op here, not in a lowering.
LogicalResult checkDifferentiable(AttentionOp op, bool captureGradients) {
  OpBuilder builder(op.getContext());
  Region scratch;
  Block *block = new Block();
  scratch.push_back(block);
  Location loc = op.getLoc();
  Type f32 = builder.getF32Type(), index = builder.getIndexType();
  for (Type type : {f32, f32, f32, f32, f32, index, index, index, index})
    block->addArgument(type, loc);
  for (Value capture : op.getCaptures())
    block->addArgument(capture.getType(), loc);
  builder.setInsertionPointToStart(block);
  auto args = block->getArguments();
  LogicalResult result = success();
  if (!op.getScoreMod().empty()) {
    SmallVector<Value> modArguments = {args[0], args[5], args[6], args[7], args[8]};
    modArguments.append(args.begin() + 9, args.end());
    Block &mod = op.getScoreMod().front();
    SmallVector<Value> seeds = {mod.getArgument(0)};
    if (captureGradients)
      mod.walk([&](tensor::ExtractOp read) {
        if (read.getType().isF32())
          seeds.push_back(read.getResult());
      });
    result = emitRegionWithTangents(builder, loc, op.getScoreMod(), modArguments, seeds);
  }
  if (succeeded(result)) {
    NormalizerAttrInterface normalizer = op.getNormalizer();
    result = normalizer.emitScoreGradient(builder, loc, args[0], args[1], args[2],
                                          normalizer.isRowWise() ? args[3] : Value(), args[4],
                                          op.getNormalizerBody());
  }
  block->dropAllDefinedValueUses();
  return result;
}

struct AttnDeriveBackwardPass : impl::AttnDeriveBackwardBase<AttnDeriveBackwardPass> {
  using AttnDeriveBackwardBase::AttnDeriveBackwardBase;
  void runOnOperation() override {
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    for (AttentionOp op : ops) {
      if (failed(KernelEmitter::checkLowerable(op)) || failed(checkDifferentiable(op, captureGradients)))
        return signalPassFailure();
      auto parent = op->getParentOfType<func::FuncOp>();
      Operation *anchor = parent ? parent.getOperation() : op.getOperation();
      OpBuilder builder(op.getContext());
      KernelEmitter emitter(op, builder, TileSizes{queryTile, keyTile});
      // The dK/dV kernel may tile differently (a GPU puts keys on the warps there).
      TileSizes keyValueTiles{keyValueQueryTile ? keyValueQueryTile : queryTile,
                              keyValueKeyTile ? keyValueKeyTile : keyTile};
      const bool withMap = blockMap && !op.getMask().empty();
      if (withMap && (keyValueTiles.query != queryTile || keyValueTiles.key != keyTile)) {
        op.emitOpError() << "block-map needs the dK/dV kernel's tiles (" << keyValueTiles.query
                         << " x " << keyValueTiles.key << ") to be the forward's ("
                         << queryTile << " x " << keyTile << ")";
        return signalPassFailure();
      }
      emitQueryGradientKernel(emitter, anchor,
                              captureGradients && !op.getScoreMod().empty(), withMap);
      KernelEmitter keyValueEmitter(op, builder, keyValueTiles);
      emitKeyValueGradientKernel(keyValueEmitter, anchor, withMap);
    }
  }
};
} // namespace
} // namespace mlir::attn
