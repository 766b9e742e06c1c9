// Compute tile ops of attn-lower-tiles-gpu: tile_matmul as ldmatrix + mma.sync (or wgmma)
// over the operands' placements, and the elementwise tile ops (mask, score_mod, normalizer,
// probabilities, score gradient) per register at its fragment position, with quad-shuffle row
// reductions.
#include "passes/CaptureReads.h"
#include "passes/ElementwiseReplay.h"
#include "passes/GpuTileLowering.h"
#include "passes/MaskedScoreProbes.h"

#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>

namespace mlir::attn::gpu_lowering {

std::pair<Value, Value> KernelLowering::position(const TileLayout &l, int64_t i) {
  Value fragmentRow = g->accumulatorRow(warpRow, i % 4);
  Value fragmentColumn = g->accumulatorColumn(g->idx(0), i / 4, i % 4);
  if (l.transposed)
    return {fragmentColumn, fragmentRow};
  return {fragmentRow, fragmentColumn};
}

FailureOr<ArrayRef<Value>> KernelLowering::valuesOf(Operation *op, Value tile) {
  auto it = registers.find(tile);
  if (it == registers.end())
    return op->emitError("GPU lowering: a register tile is read before it is written");
  return ArrayRef<Value>(it->second);
}

SmallVector<Value> KernelLowering::registerTilesWrittenIn(Operation *op) {
  llvm::SetVector<Value> tiles;
  op->walk([&](Operation *inner) {
    for (Value tile : writtenTiles(inner))
      if (isTile(tile) && layout(tile).placement != Placement::Shared &&
          registers.count(tile))
        tiles.insert(tile);
  });
  return tiles.takeVector();
}


LogicalResult KernelLowering::lowerMatmul(TileMatmulOp op) {
  TileLayout &acc = layout(op.getAcc()), &lhs = layout(op.getLhs()), &rhs = layout(op.getRhs());
  if (acc.placement != Placement::Matrix)
    return op.emitError("GPU lowering: a product into a shared tile");
  if (op.getInit())
    return op.emitError("GPU lowering: a product with init (attn-tile's fold-normalizer is CPU only)");
  double factor = (op.getAlpha() ? op.getAlpha()->convertToDouble() : 1.0);
  if (lhs.placement == Placement::Shared)
    factor *= lhs.multiplier;
  if (rhs.placement == Placement::Shared)
    factor *= rhs.multiplier;
  for (TileLayout *operand : {&lhs, &rhs})
    if (operand->placement == Placement::Shared)
      waitForBuffer(buffers[operand->buffer]);

  int64_t depth = op.getTransposeLhs() ? lhs.shape[0] : lhs.shape[1];
  int64_t columns = acc.transposed ? acc.shape[0] : acc.shape[1];
  int64_t nTiles = columns / 8, kSteps = depth / 16;
  SmallVector<Value> target;
  if (op.getAccumulate()) {
    auto old = valuesOf(op, op.getAcc());
    if (failed(old))
      return failure();
    target.assign(old->begin(), old->end());
    if (op.getRowScale()) {
      auto scale = valuesOf(op, op.getRowScale());
      if (failed(scale))
        return failure();
      for (size_t i = 0; i < target.size(); ++i)
        target[i] = g->fmul(target[i], rowValue(*scale, acc, i));
    }
  }
  bool direct = factor == 1.0 && op.getAccumulate();
  SmallVector<Value> product = direct ? target : g->zeros(4 * nTiles);

  if (wgmmaProducts.contains(op)) {
    SharedBuffer &queries = buffers[lhs.buffer], &keys = buffers[rhs.buffer];
    int64_t keyBytes = keys.rows * keys.width * options.element.getIntOrFloatBitWidth() / 8;
    Value keyAddress = g->sharedAddress(keys.view);
    if (keys.stage)
      keyAddress = arith::AddIOp::create(
          b, loc, keyAddress,
          arith::IndexCastOp::create(b, loc, b.getI64Type(),
                                     g->mul(keys.stage, g->idx(keyBytes))));
    Value warpgroupRow = g->mul(g->div(g->warp, 4), g->idx(64));
    product = g->warpgroupMatmul(g->sharedAddress(queries.view), queries.rows, warpgroupRow,
                                 keyAddress, keys.rows, depth);
    if (direct)
      for (size_t i = 0; i < product.size(); ++i)
        product[i] = g->fadd(product[i], target[i]);
  } else if (!acc.transposed && lhs.placement == Placement::Matrix) {
    // A from the registers of an earlier product (P, dS): C layout of two n-tiles = A layout.
    if (lhs.transposed != op.getTransposeLhs() || rhs.placement != Placement::Shared)
      return op.emitError("GPU lowering: unsupported operand layouts of a product");
    auto a = valuesOf(op, op.getLhs());
    if (failed(a))
      return failure();
    SharedBuffer &buffer = buffers[rhs.buffer];
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      auto aRegs = g->accumulatorAsA(*a, kk);
      for (int64_t np = 0; np < nTiles / 2; ++np) {
        auto bRegs = rhs.loadedTransposed
                         ? g->loadTransposedB(buffer.view, buffer.stage, g->idx(16 * np), kk,
                                              buffer.width / kChunk)
                         : g->loadRowMajorB(buffer.view, buffer.stage, g->idx(16 * kk), 2 * np,
                                            buffer.width / kChunk);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t tile = 2 * np + half;
          auto d = g->mma(aRegs, bRegs[2 * half], bRegs[2 * half + 1],
                          ArrayRef<Value>(product).slice(4 * tile, 4));
          std::copy(d.begin(), d.end(), product.begin() + 4 * tile);
        }
      }
    }
  } else {
    // Both operands in shared memory. C = A B with A's rows on the warps, or, for a
    // transposed C, C^T = B^T A^T with B^T's rows (the keys) on the warps.
    if (lhs.placement != Placement::Shared || rhs.placement != Placement::Shared ||
        op.getTransposeLhs() || lhs.loadedTransposed ||
        (acc.transposed && !rhs.loadedTransposed))
      return op.emitError("GPU lowering: unsupported operand layouts of a product");
    TileLayout &aLayout = acc.transposed ? rhs : lhs;
    TileLayout &bLayout = acc.transposed ? lhs : rhs;
    SharedBuffer &bBuffer = buffers[bLayout.buffer];
    bool bStoredTransposed = acc.transposed ? true : rhs.loadedTransposed;
    // Fragments read once before the loop are used as they are; otherwise the k-steps go
    // outermost so that one A fragment (4 registers) is alive at a time, not all of them.
    auto found = hoisted.find(aLayout.buffer);
    SharedBuffer &aBuffer = buffers[aLayout.buffer];
    SmallVector<Value, 4> aRegs;
    for (int64_t kk = 0; kk < kSteps; ++kk)
      for (int64_t np = 0; np < nTiles / 2; ++np) {
        if (found != hoisted.end())
          aRegs = found->second[kk];
        else if (np == 0)
          aRegs = g->loadRowMajorA(aBuffer.view, aBuffer.stage, warpRow, kk,
                                   aBuffer.width / kChunk);
        auto bRegs = bStoredTransposed
                         ? g->loadTransposedB(bBuffer.view, bBuffer.stage, g->idx(16 * np), kk,
                                              bBuffer.width / kChunk)
                         : g->loadRowMajorB(bBuffer.view, bBuffer.stage, g->idx(16 * kk),
                                            2 * np, bBuffer.width / kChunk);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t tile = 2 * np + half;
          auto d = g->mma(aRegs, bRegs[2 * half], bRegs[2 * half + 1],
                          ArrayRef<Value>(product).slice(4 * tile, 4));
          std::copy(d.begin(), d.end(), product.begin() + 4 * tile);
        }
      }
  }
  if (!direct) {
    Value f = g->f32(factor);
    for (size_t i = 0; i < product.size(); ++i) {
      Value scaled = factor == 1.0 ? product[i] : g->fmul(product[i], f);
      product[i] = op.getAccumulate() ? g->fadd(target[i], scaled) : scaled;
    }
  }
  registers[op.getAcc()] = product;
  return success();
}

// ----- elementwise tile work, per register at its fragment position -----

LogicalResult KernelLowering::lowerMask(TileMaskOp op) {
  if (op.getFill())
    return op.emitError("GPU lowering: a mask with fill (attn-tile's fold-normalizer is CPU only)");
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  Value queryLength = mapped(op.getQueryLength()), keyLength = mapped(op.getKeyLength());
  std::optional<int64_t> window = op.getWindow();
  SmallVector<Value> out;
  for (size_t i = 0; i < scores->size(); ++i) {
    auto [r, c] = position(l, i);
    Value row = g->add(rowStart, r), key = g->add(colStart, c);
    // Row `row` may see keys [lo, hi); a padding row sees none.
    Value lo = window ? g->sub(row, g->idx(*window)) : g->idx(0);
    Value hi = keyLength;
    if (op.getCausal())
      hi = arith::MinSIOp::create(b, loc, hi, g->add(row, g->idx(1)));
    else if (window)
      hi = arith::MinSIOp::create(b, loc, hi, g->add(row, g->idx(*window + 1)));
    Value allowed = g->andI(g->lt(row, queryLength),
                            g->andI(g->le(lo, key), g->lt(key, hi)));
    out.push_back(g->select(allowed, (*scores)[i], g->f32(-INFINITY)));
  }
  registers[op.getScores()] = out;
  return success();
}

std::pair<SmallVector<Value>, Value> KernelLowering::mappedCaptures(ValueRange captures,
                                                                    Value fault) {
  SmallVector<Value> kernelCaptures;
  for (Value capture : captures)
    kernelCaptures.push_back(mapped(capture));
  return {kernelCaptures, fault ? mapped(fault) : Value()};
}

Value KernelLowering::lastValidKey(Value colStart, Value cols) {
  return g->add(colStart,
                arith::MaxSIOp::create(b, loc, g->sub(cols, g->idx(1)), g->idx(0)));
}

FailureOr<SmallVector<Value>> KernelLowering::evaluateRegion(Region &region, ValueRange args,
                                                             ValueRange captures, Value fault,
                                                             bool derivative) {
  // Scalar code per register; a captured tensor's read becomes a bounds-checked global load.
  return replayElementwise(
      b, loc, args,
      [&](OpBuilder &builder, ValueRange standIns) -> FailureOr<SmallVector<Value>> {
        SmallVector<Value> all(standIns);
        all.append(captures.begin(), captures.end());
        if (!derivative)
          return SmallVector<Value>{inlineScalarRegion(builder, region, all)};
        auto both = emitRegionWithDerivative(builder, loc, region, all);
        if (failed(both))
          return failure();
        return SmallVector<Value>{both->first, both->second};
      },
      [&](Operation &inner, ArrayRef<Value> operands) {
        return lowerCaptureRead(b, loc, inner, operands, captures, fault);
      });
}

/// The CTA evaluates the mask region over the block's rows x cols positions, each thread a
/// strided share, and votes with two barrier reductions (some allowed, all allowed): the
/// classification is uniform over the CTA, as the block loop's branch on it needs.
LogicalResult KernelLowering::lowerMaskClassify(TileMaskClassifyOp op) {
  // The GPU kernels classify each block themselves (attn-tile-gpu emits no block map: a CTA
  // votes on a block in two barrier reductions, cheaper than a dependent global read).
  if (op.getMap())
    return op.emitOpError("a block map is not lowered by attn-lower-tiles-gpu: emit the GPU "
                          "kernels without block-map");
  Value rows = mapped(op.getRows()), cols = mapped(op.getCols());
  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  SmallVector<Value> captures;
  Value fault;
  std::tie(captures, fault) = mappedCaptures(op.getCaptures(), op.getFault());
  Value total = arith::MulIOp::create(b, loc, rows, cols);
  Value safeCols = arith::MaxSIOp::create(b, loc, cols, g->idx(1));
  Value none = arith::ConstantOp::create(b, loc, b.getBoolAttr(false));
  Value every = arith::ConstantOp::create(b, loc, b.getBoolAttr(true));
  LogicalResult status = success();
  auto loop = scf::ForOp::create(
      b, loc, g->threadId, total, g->idx(g->threads()), ValueRange{none, every},
      [&](OpBuilder &, Location, Value e, ValueRange carried) {
        Value row = g->add(rowStart, arith::DivUIOp::create(b, loc, e, safeCols));
        Value key = g->add(colStart, arith::RemUIOp::create(b, loc, e, safeCols));
        auto allowed = evaluateRegion(op.getMask(), {batch, head, row, key}, captures, fault,
                                      /*derivative=*/false);
        if (failed(allowed)) {
          status = failure();
          scf::YieldOp::create(b, loc, carried);
          return;
        }
        Value keep = (*allowed)[0];
        scf::YieldOp::create(b, loc, ValueRange{arith::OrIOp::create(b, loc, carried[0], keep),
                                               g->andI(carried[1], keep)});
      });
  if (failed(status))
    return failure();
  auto vote = [&](NVVM::BarrierReduction kind, Value flag) {
    Value predicate = arith::ExtUIOp::create(b, loc, b.getI32Type(), flag);
    Value result = NVVM::BarrierOp::create(b, loc, b.getI32Type(), Value(), Value(),
                                           NVVM::BarrierReductionAttr::get(b.getContext(), kind),
                                           predicate)
                       .getRes();
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, result,
                                 arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(0)));
  };
  Value some = vote(NVVM::BarrierReduction::OR, loop.getResult(0));
  Value all = vote(NVVM::BarrierReduction::AND, loop.getResult(1));
  // An empty extent has no position: "some" is false, so the block is empty (0).
  Value kind = g->select(some, g->select(all, g->idx(1), g->idx(2)), g->idx(0));
  map.map(op.getKind(), kind);
  return success();
}

/// Per register, as tile_mask: the region's verdict at its (row, key), -inf where false.
LogicalResult KernelLowering::lowerMaskRegion(TileMaskRegionOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  SmallVector<Value> captures;
  Value fault;
  std::tie(captures, fault) = mappedCaptures(op.getCaptures(), op.getFault());
  Value lastKey = lastValidKey(colStart, mapped(op.getCols()));
  SmallVector<Value> out;
  for (size_t i = 0; i < scores->size(); ++i) {
    auto [r, c] = position(l, i);
    Value key = arith::MinSIOp::create(b, loc, g->add(colStart, c), lastKey);
    auto allowed = evaluateRegion(op.getMask(), {batch, head, g->add(rowStart, r), key},
                                  captures, fault, /*derivative=*/false);
    if (failed(allowed))
      return failure();
    out.push_back(g->select((*allowed)[0], (*scores)[i], g->f32(-INFINITY)));
  }
  registers[op.getScores()] = out;
  return success();
}

LogicalResult KernelLowering::lowerScoreMod(TileScoreModOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  double multiplier = op.getMultiplier().convertToDouble();
  SmallVector<Value> captures;
  Value fault;
  std::tie(captures, fault) = mappedCaptures(op.getCaptures(), op.getFault());
  // Padding keys are evaluated at the last valid one (their scores are masked anyway), so a
  // region never reads a capture past the sequence.
  Value lastKey = lastValidKey(colStart, mapped(op.getCols()));
  SmallVector<Value> out, derivative;
  for (size_t i = 0; i < scores->size(); ++i) {
    auto [r, c] = position(l, i);
    Value key = g->add(colStart, c);
    if (!captures.empty())
      key = arith::MinSIOp::create(b, loc, key, lastKey);
    SmallVector<Value> args{(*scores)[i], batch, head, g->add(rowStart, r), key};
    auto replayed = evaluateRegion(op.getScoreMod(), args, captures, fault,
                                   static_cast<bool>(op.getDerivative()));
    if (failed(replayed))
      return failure();
    Value value = (*replayed)[0];
    if (op.getDerivative())
      derivative.push_back((*replayed)[1]);
    if (multiplier != 1.0)
      value = g->fmul(value, g->f32(multiplier));
    out.push_back(value);
  }
  registers[op.getScores()] = out;
  if (op.getDerivative())
    registers[op.getDerivative()] = derivative;
  return success();
}

LogicalResult KernelLowering::lowerNormalize(TileNormalizeOp op) {
  if (op.getFolded())
    return op.emitError("GPU lowering: a folded normalizer (attn-tile's fold-normalizer is CPU only)");
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  NormalizerAttrInterface normalizer = op.getNormalizer();
  Region &body = op.getNormalizerBody();
  Value keyLength = mapped(op.getKeyLength());
  SmallVector<Value> s(*scores);
  // Masked scores are -inf; most normalizers map them to 0 by themselves (and the row shift
  // stays finite), so the select is kept only for those that do not.
  bool vanishes = probabilityVanishesAtNegativeInfinity(normalizer, body, loc, /*fast=*/true);
  auto probability = [&](Value score, Value shifted) {
    Value p = normalizer.emitFastProbability(b, loc, shifted, keyLength, body);
    return vanishes ? p : zeroWhereMasked(p, score);
  };
  if (!normalizer.isRowWise()) {
    for (Value &value : s)
      value = probability(value, value);
    registers[op.getScores()] = s;
    return success();
  }
  if (l.transposed)
    return op.emitError("GPU lowering: a row-wise normalizer over a transposed tile");
  unsigned stateSize = normalizer.getRowStateSize();
  SmallVector<SmallVector<Value>> state(2);
  for (Value tile : op.getState()) {
    auto values = valuesOf(op, tile);
    if (failed(values))
      return failure();
    for (int64_t half = 0; half < 2; ++half)
      state[half].push_back((*values)[half]);
  }
  SmallVector<SmallVector<Value>> nextState(stateSize);
  SmallVector<Value> correction;
  for (int64_t half = 0; half < 2; ++half) {
    Value blockMax;
    for (size_t i = 0; i < s.size(); ++i)
      if ((i % 4) / 2 == static_cast<size_t>(half))
        blockMax = blockMax ? g->fmax(blockMax, s[i]) : s[i];
    blockMax = g->quadReduce(blockMax, /*isMax=*/true);
    // {new state..., shift of the block's scores, correction of the accumulator}.
    SmallVector<Value> shifted = normalizer.emitRowShift(b, loc, state[half], blockMax);
    if (shifted.size() != stateSize + 2)
      return op.emitError("normalizer's emitRowShift returned ")
             << shifted.size() << " values, expected " << stateSize + 2;
    Value shift = shifted[stateSize], rowCorrection = shifted[stateSize + 1];
    shifted.truncate(stateSize);
    Value blockSum;
    for (size_t i = 0; i < s.size(); ++i)
      if ((i % 4) / 2 == static_cast<size_t>(half)) {
        s[i] = probability(s[i], g->fsub(s[i], shift));
        blockSum = blockSum ? g->fadd(blockSum, s[i]) : s[i];
      }
    // The state is opaque, so no entry of it can stay a per-thread partial sum: the block's
    // sum is reduced across the quad here and every thread carries its rows' full state.
    blockSum = g->quadReduce(blockSum, /*isMax=*/false);
    SmallVector<Value> next =
        normalizer.emitRowAccumulate(b, loc, shifted, rowCorrection, blockSum);
    if (next.size() != stateSize)
      return op.emitError("normalizer's emitRowAccumulate returned ")
             << next.size() << " values, expected " << stateSize;
    for (unsigned k = 0; k < stateSize; ++k)
      nextState[k].push_back(next[k]);
    correction.push_back(rowCorrection);
  }
  registers[op.getScores()] = s;
  for (auto [k, tile] : llvm::enumerate(op.getState()))
    registers[tile] = nextState[k];
  if (op.getCorrection())
    registers[op.getCorrection()] = correction;
  return success();
}

LogicalResult KernelLowering::lowerRowFinalize(TileRowFinalizeOp op) {
  SmallVector<Value> factors, lses;
  for (int64_t half = 0; half < 2; ++half) {
    SmallVector<Value> state;
    for (Value tile : op.getState()) {
      auto values = valuesOf(op, tile);
      if (failed(values))
        return failure();
      state.push_back((*values)[half]);
    }
    auto [factor, lse] = op.getNormalizer().emitRowFinalize(b, loc, state);
    if (!factor || !lse)
      return op.emitError("normalizer's emitRowFinalize returned no factor or LSE");
    factors.push_back(factor);
    lses.push_back(lse);
  }
  registers[op.getFactor()] = factors;
  registers[op.getLse()] = lses;
  return success();
}

LogicalResult KernelLowering::lowerProbabilities(TileProbabilitiesOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  ArrayRef<Value> lse;
  if (op.getLse()) {
    auto values = valuesOf(op, op.getLse());
    if (failed(values))
      return failure();
    lse = *values;
  }
  Value keyLength = mapped(op.getKeyLength());
  SmallVector<Value> probs;
  for (size_t i = 0; i < scores->size(); ++i) {
    Value s = (*scores)[i];
    Value p = op.getNormalizer().emitBackwardProbability(
        b, loc, s, lse.empty() ? Value() : rowValue(lse, l, i), keyLength,
        op.getNormalizerBody(), /*fast=*/true);
    // Masked (-inf): p = 0 (a row-wise p is NaN in a row with no allowed key: lse = -inf).
    probs.push_back(zeroWhereMasked(p, s));
  }
  registers[op.getProbs()] = probs;
  return success();
}

LogicalResult KernelLowering::lowerScoreGradient(TileScoreGradientOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  auto probs = valuesOf(op, op.getProbs());
  auto grads = valuesOf(op, op.getGrads());
  if (failed(scores) || failed(probs) || failed(grads))
    return failure();
  ArrayRef<Value> rowTerm, derivative;
  if (op.getRowTerm()) {
    auto values = valuesOf(op, op.getRowTerm());
    if (failed(values))
      return failure();
    rowTerm = *values;
  }
  if (op.getDerivative()) {
    auto values = valuesOf(op, op.getDerivative());
    if (failed(values))
      return failure();
    derivative = *values;
  }
  Value keyLength = mapped(op.getKeyLength());
  // Masked (-inf): dS = 0. The select is left out where the formula gives 0 there by itself
  // (p = 0 at masked scores), unless a score_mod's derivative multiplies it.
  bool vanishes = derivative.empty() &&
                  gradientVanishesAtNegativeInfinity(op.getNormalizer(), op.getNormalizerBody(),
                                                     !rowTerm.empty(), loc);
  SmallVector<Value> out;
  for (size_t i = 0; i < scores->size(); ++i) {
    Value s = (*scores)[i];
    auto gradient = op.getNormalizer().emitScoreGradient(
        b, loc, s, (*probs)[i], (*grads)[i], rowTerm.empty() ? Value() : rowValue(rowTerm, l, i),
        keyLength, op.getNormalizerBody());
    if (failed(gradient))
      return failure();
    Value value = *gradient;
    if (!derivative.empty())
      value = g->fmul(value, derivative[i]);
    out.push_back(vanishes ? value : zeroWhereMasked(value, s));
  }
  registers[op.getGrads()] = out;
  return success();
}


} // namespace mlir::attn::gpu_lowering
