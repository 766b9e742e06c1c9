// Capture gradients in the GPU dQ kernel (attn-lower-tiles-gpu): tile_copy keeps the scores the
// score_mod read in registers, and tile_capture_gradient replays the score_mod per register with
// forward-mode tangents (as CapturesCpu.cpp does per row of keys), adds G * d mod / d read into
// the global gradient buffers with atomic adds and turns G (dS') into dS = G * d mod / d s.
// A read whose indices vary over the tile (a bias table at [h, q - k]) adds per register; one
// that is uniform over it (slopes[h]) is summed per thread, then over the warp by shuffles, and
// added once per warp.
#include "passes/CaptureReads.h"
#include "passes/ElementwiseReplay.h"
#include "passes/GpuTileLowering.h"

namespace mlir::attn::gpu_lowering {

LogicalResult KernelLowering::lowerCopy(TileCopyOp op) {
  if (layout(op.getSource()).placement == Placement::Shared ||
      layout(op.getDest()).placement == Placement::Shared)
    return op.emitError("GPU lowering: tile_copy of a shared operand");
  auto values = valuesOf(op, op.getSource());
  if (failed(values))
    return failure();
  registers[op.getDest()] = SmallVector<Value>(*values);
  return success();
}

namespace {
/// The f32 capture reads of a score_mod region (its seeds after the score), each with its
/// position among all the region's capture reads (the order the replay meets them in) and
/// whether its indices are uniform over a tile: computed from b, h, constants and uniform
/// reads only, not from the score, the query or the key.
struct RegionReads {
  SmallVector<Value> seeds;
  SmallVector<size_t> ordinal;
  SmallVector<bool> uniform;
  size_t total = 0;
};

RegionReads analyzeReads(Block &block) {
  RegionReads reads;
  reads.seeds.push_back(block.getArgument(0));
  DenseSet<Value> varying = {block.getArgument(0), block.getArgument(3), block.getArgument(4)};
  for (Operation &inner : block.without_terminator()) {
    bool varies = inner.getNumRegions() != 0 ||
                  llvm::any_of(inner.getOperands(), [&](Value v) { return varying.contains(v); });
    if (varies)
      varying.insert(inner.result_begin(), inner.result_end());
    auto load = dyn_cast<memref::LoadOp>(inner);
    if (!load)
      continue;
    if (load.getType().isF32()) {
      reads.seeds.push_back(load.getResult());
      reads.ordinal.push_back(reads.total);
      reads.uniform.push_back(!varies);
    }
    ++reads.total;
  }
  return reads;
}
} // namespace

LogicalResult KernelLowering::lowerCaptureGradient(TileCaptureGradientOp op) {
  TileLayout &l = layout(op.getRaw());
  auto raw = valuesOf(op, op.getRaw());
  auto upstream = valuesOf(op, op.getGrads());
  if (failed(raw) || failed(upstream))
    return failure();
  Region &region = op.getScoreMod();
  RegionReads analysis = analyzeReads(region.front());
  // The gradient buffer of each capture (f32 ones only, in order).
  DenseMap<size_t, Value> gradientOf;
  size_t next = 0;
  for (auto [position, capture] : llvm::enumerate(op.getCaptures()))
    if (cast<MemRefType>(capture.getType()).getElementType().isF32())
      gradientOf[position] = mapped(op.getGradients()[next++]);

  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  Value rows = mapped(op.getRows()), cols = mapped(op.getCols());
  SmallVector<Value> captures;
  Value fault;
  std::tie(captures, fault) = mappedCaptures(op.getCaptures(), op.getFault());
  // Padding keys are evaluated at the last valid one (as tile_score_mod did) and add nothing.
  Value lastKey = lastValidKey(colStart, cols);
  Value zero = g->f32(0.0);

  size_t seedReads = analysis.ordinal.size();
  SmallVector<Value> sums(seedReads);            // uniform reads: this thread's sum
  SmallVector<CaptureRead> uniformReads;         // uniform reads: where they add
  SmallVector<Value> out;
  for (size_t i = 0; i < raw->size(); ++i) {
    auto [r, c] = position(l, i);
    Value key = arith::MinSIOp::create(b, loc, g->add(colStart, c), lastKey);
    SmallVector<Value> args{(*raw)[i], batch, head, g->add(rowStart, r), key};
    SmallVector<CaptureRead> reads;
    auto replayed = replayElementwise(
        b, loc, args,
        [&](OpBuilder &builder, ValueRange standIns) -> FailureOr<SmallVector<Value>> {
          SmallVector<Value> all(standIns);
          all.append(captures.begin(), captures.end());
          return emitRegionWithTangents(builder, loc, region, all, analysis.seeds);
        },
        [&](Operation &inner, ArrayRef<Value> operands) {
          return lowerCaptureRead(b, loc, inner, operands, captures, fault, &reads);
        });
    if (failed(replayed))
      return failure();
    if (reads.size() != analysis.total)
      return op.emitError("GPU lowering: the score_mod's capture reads were not all lowered");
    Value grad = (*upstream)[i];
    // Masked scores have G = 0 and add nothing (even where a partial is not finite), and
    // neither do padding rows and keys.
    Value contributes =
        g->andI(g->andI(g->lt(r, rows), g->lt(c, cols)),
                arith::CmpFOp::create(b, loc, arith::CmpFPredicate::ONE, grad, zero));
    for (size_t seed = 0; seed < seedReads; ++seed) {
      const CaptureRead &read = reads[analysis.ordinal[seed]];
      Value contribution =
          g->select(contributes, g->fmul(grad, (*replayed)[2 + seed]), zero);
      if (analysis.uniform[seed]) {
        sums[seed] = sums[seed] ? g->fadd(sums[seed], contribution) : contribution;
        if (i == 0)
          uniformReads.push_back(read);
        continue;
      }
      Value gradient = gradientOf.lookup(read.capture);
      scf::IfOp::create(b, loc, contributes, [&](OpBuilder &, Location) {
        memref::AtomicRMWOp::create(b, loc, arith::AtomicRMWKind::addf, contribution, gradient,
                                    read.clamped);
        scf::YieldOp::create(b, loc);
      });
    }
    out.push_back(g->fmul(grad, (*replayed)[1]));
  }
  // Uniform reads: the warp's sum (every lane is here: the kernel branches on block-uniform
  // conditions only), added by lane 0 unless it is 0.
  size_t uniformIndex = 0;
  for (size_t seed = 0; seed < seedReads; ++seed) {
    if (!analysis.uniform[seed] || !sums[seed])
      continue;
    const CaptureRead &read = uniformReads[uniformIndex++];
    Value sum = sums[seed];
    for (int32_t offset : {16, 8, 4, 2, 1})
      sum = g->fadd(sum, gpu::ShuffleOp::create(b, loc, sum, offset, 32, gpu::ShuffleMode::XOR)
                             .getShuffleResult());
    Value adds = g->andI(
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, g->lane, g->idx(0)),
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNE, sum, zero));
    Value gradient = gradientOf.lookup(read.capture);
    scf::IfOp::create(b, loc, adds, [&](OpBuilder &, Location) {
      memref::AtomicRMWOp::create(b, loc, arith::AtomicRMWKind::addf, sum, gradient,
                                  read.clamped);
      scf::YieldOp::create(b, loc);
    });
  }
  registers[op.getGrads()] = out;
  return success();
}

} // namespace mlir::attn::gpu_lowering
