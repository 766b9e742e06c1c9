// attn-tile: rewrites each attn.attention into the flash forward kernel, written once and
// target independent as a loop over key/value blocks whose body works on whole tiles:
//   S = Q K^T (tile_matmul) -> score_mod -> mask (boundary blocks only) -> normalizer with its
//   row state (tile_normalize) -> O = O * correction + P V (tile_matmul)
// and, after the loop, the normalizer's finalize (output factor, LSE). What the normalizer
// carries per row and how it corrects the accumulator is NormalizerAttrInterface's business;
// a target lowers the tile ops (attn-lower-tiles-cpu).
#include "dialects/attn/AttnDialect.h"
#include "passes/KernelEmitter.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILE
#include "passes/Passes.h.inc"

namespace {
/// Emits `@<name>_fwd(q, k, v, o, lse, [kv_lengths,] [captures..., fault,] [block map,] batch,
/// head, queryStart)`.
void emitForwardKernel(KernelEmitter &e, Operation *anchor, bool blockMap, bool foldNormalizer) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  MemRefType view4 = e.view4Type(), view3 = e.view3Type();
  func::FuncOp kernel =
      e.createKernel(kernelBaseName(e.op) + "_fwd", {view4, view4, view4, view4, view3}, anchor,
                     /*withCaptureGradients=*/false, blockMap);
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], o = args[3], lse = args[4];
  Value batch, head, queryStart;
  std::tie(batch, head, queryStart) = KernelEmitter::gridArguments(kernel);
  int64_t tq = e.tiles.query, tk = e.tiles.key, d = e.headDim, dv = e.valueHeadDim;
  NormalizerAttrInterface normalizer = e.normalizer;

  Value queryLength = e.dim(q, 2), keyLength = e.keyLengthOf(k, batch);
  Value kvHead = e.kvHeadOf(head, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);
  Value rows = e.validCount(queryStart, queryLength, tq);
  // Every buffer is a tile: O(tile * D) memory, never S x S.
  Value queries = e.allocTile({tq, d});
  Value keysT = e.allocTile({d, tk});
  Value values = e.allocTile({tk, dv});
  Value scores = e.allocTile({tq, tk});
  Value acc = e.allocTile({tq, dv});
  SmallVector<Value> state;
  for (unsigned i = 0; i < normalizer.getRowStateSize(); ++i)
    state.push_back(e.allocTile({tq}));
  Value correction = e.rowWise ? e.allocTile({tq}) : Value();

  // An elementwise normalizer of the form g(a s + c) takes a with the scale into the queries
  // and c as the score product's initial value, so that no operation per score is left but g;
  // its masks then zero probabilities after g instead of writing -inf before it. Not under a
  // score_mod (s must be the product itself) or a mask region (which writes -inf).
  std::optional<double> foldFactor = normalizer.getFoldedScoreFactor();
  bool folded = foldNormalizer && foldFactor && !e.hasScoreMod && !e.hasMask;
  Value scoreOffset =
      folded ? normalizer.emitFoldedScoreOffset(b, loc, keyLengthF32) : Value();
  auto load = TileLoadOp::create(b, loc, q, batch, head, queryStart, rows, queries, UnitAttr(), FloatAttr());
  load.setMultiplierAttr(
      b.getF32FloatAttr(folded ? e.scale * *foldFactor : e.queryMultiplier()));
  TileFillOp::create(b, loc, acc, b.getF32FloatAttr(0.0));
  if (e.rowWise)
    TileRowInitOp::create(b, loc, state, normalizer);

  auto [tileLo, tileHi] = e.keyRangeForTile(queryStart, rows, keyLength);
  // With a block map, key blocks start on the map's grid (a window's first key need not).
  if (e.blockMap)
    tileLo = e.alignDown(tileLo, tk);

  scf::ForOp::create(b, loc, tileLo, tileHi, e.index(tk), ValueRange{},
                     [&](OpBuilder &, Location, Value blockStart, ValueRange) {
    Value count = e.validCount(blockStart, keyLength, tk);
    // A block the mask region empties is skipped: it changes neither O nor the row state.
    e.unlessMaskedOut(rows, count, batch, head, queryStart, blockStart, [&](Value kind) {
      TileLoadOp::create(b, loc, k, batch, kvHead, blockStart, count, keysT, UnitAttr(), FloatAttr()).setTranspose(true);
      TileLoadOp::create(b, loc, v, batch, kvHead, blockStart, count, values, UnitAttr(), FloatAttr());
      TileMatmulOp::create(b, loc, queries, keysT, scores, rows, e.index(d), count, Value(),
                           scoreOffset, UnitAttr(), UnitAttr(), FloatAttr());
      e.scoreModTile(scores, rows, count, batch, head, queryStart, blockStart, Value());
      Value needsMask = e.blockNeedsMask(queryStart, tq, blockStart, tk, queryLength, keyLength);
      auto mask = [&](FloatAttr fill) {
        scf::IfOp::create(b, loc, needsMask, [&](OpBuilder &, Location) {
          e.maskTile(scores, queryStart, blockStart, queryLength, keyLength, fill);
          scf::YieldOp::create(b, loc);
        });
      };
      if (!folded)
        mask(FloatAttr());
      e.maskRegionTile(kind, scores, rows, count, batch, head, queryStart, blockStart);
      auto normalize = TileNormalizeOp::create(b, loc, scores, rows, state, correction,
                                               keyLengthF32, normalizer);
      normalize.setFolded(folded);
      e.copyNormalizerBody(normalize.getNormalizerBody());
      if (folded)
        mask(b.getF32FloatAttr(0.0));
      auto update = TileMatmulOp::create(b, loc, scores, values, acc, rows, count, e.index(dv),
                                         correction, Value(), UnitAttr(), UnitAttr(), FloatAttr());
      update.setAccumulate(true);
    });
    scf::YieldOp::create(b, loc);
  });

  // Finalize: the normalizer's output factor per row (row-wise) and its LSE for the backward.
  Value factor;
  if (e.rowWise) {
    factor = e.allocTile({tq});
    Value rowLse = e.allocTile({tq});
    TileRowFinalizeOp::create(b, loc, state, factor, rowLse, normalizer);
    TileStoreOp::create(b, loc, rowLse, rows, lse, batch, head, queryStart, Value(), FloatAttr());
  }
  TileStoreOp::create(b, loc, acc, rows, o, batch, head, queryStart, factor, FloatAttr());
  e.releaseTiles();
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
      emitForwardKernel(emitter, parent ? parent.getOperation() : op.getOperation(), blockMap,
                        foldNormalizer);
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
