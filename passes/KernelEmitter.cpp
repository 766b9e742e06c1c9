#include "passes/KernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {
/// Appends a copy of `from` (an op's scalar region; nothing when empty) to `into`.
void copyRegion(Region &from, Region &into) {
  IRMapping mapping;
  from.cloneInto(&into, into.end(), mapping);
}

/// copyRegion for a score_mod or mask region that may read captured tensors: its trailing
/// tensor arguments become the kernel's capture memrefs' types and each `tensor.extract` /
/// `tensor.dim` of them a `memref.load` / `memref.dim`, as the tile ops read them.
void copyCaptureRegion(Region &from, Region &into, ValueRange captures) {
  copyRegion(from, into);
  if (captures.empty() || into.empty())
    return;
  Block &block = into.front();
  unsigned first = block.getNumArguments() - captures.size();
  for (auto [position, capture] : llvm::enumerate(captures))
    block.getArgument(first + position).setType(capture.getType());
  SmallVector<Operation *> reads;
  block.walk([&](Operation *read) {
    if (isa<tensor::ExtractOp, tensor::DimOp>(read))
      reads.push_back(read);
  });
  for (Operation *read : reads) {
    OpBuilder builder(read);
    Value replacement;
    // The capture arguments are memrefs already: the ops' typed tensor getters would assert,
    // so their source is read as a plain operand.
    Value source = read->getOperand(0);
    if (auto extract = dyn_cast<tensor::ExtractOp>(read))
      replacement =
          memref::LoadOp::create(builder, extract.getLoc(), source, extract.getIndices());
    else if (auto dim = dyn_cast<tensor::DimOp>(read))
      replacement = memref::DimOp::create(builder, dim.getLoc(), source, dim.getIndex());
    read->getResult(0).replaceAllUsesWith(replacement);
    read->erase();
  }
}
} // namespace

KernelEmitter::KernelEmitter(AttentionOp op, OpBuilder &builder, TileSizes tiles)
    : op(op), b(builder), loc(op.getLoc()), tiles(tiles), normalizer(op.getNormalizer()),
      rowWise(normalizer.isRowWise()), headDim(op.getHeadDim()),
      valueHeadDim(op.getValueHeadDim()), scale(op.getEffectiveScale()),
      causal(op.getCausal()), hasScoreMod(!op.getScoreMod().empty()),
      hasMask(!op.getMask().empty()) {
  // A window of 2^30 keys or more covers every row of any sequence the kernels run, and
  // clamping it keeps the bound arithmetic (row + window + 1) from overflowing, in 32-bit GPU
  // indices too.
  if (auto windowAttr = op.getWindowAttr())
    window = std::min<int64_t>(windowAttr.getInt(), int64_t(1) << 30);
}

LogicalResult KernelEmitter::checkLowerable(AttentionOp op) {
  // The tiles hold whole rows of D and Dv; beyond this a kernel's tiles would not fit any
  // cache (and the lowering unrolls per vector of a row).
  for (auto [name, dim] : {std::pair<StringRef, int64_t>{"D", op.getHeadDim()},
                           std::pair<StringRef, int64_t>{"Dv", op.getValueHeadDim()}})
    if (dim > kMaxHeadDim)
      return op.emitOpError() << "head dim " << name << " = " << dim
                              << " is above the tiled kernels' limit of " << kMaxHeadDim;
  if (op.getBias())
    return op.emitOpError("run attn-legalize first: it turns the bias operand into a "
                          "captured tensor");
  return success();
}

std::string mlir::attn::kernelBaseName(AttentionOp op) {
  auto func = op->getParentOfType<func::FuncOp>();
  std::string name = func ? func.getSymName().str() : "attention";
  int64_t position = 0, count = 0;
  if (func)
    func.walk([&](AttentionOp other) {
      if (other == op)
        position = count;
      ++count;
    });
  if (count > 1)
    name += "_" + std::to_string(position);
  return name;
}

MemRefType KernelEmitter::view4Type() const {
  int64_t dyn = ShapedType::kDynamic;
  auto layout = StridedLayoutAttr::get(b.getContext(), dyn, {dyn, dyn, dyn, 1});
  return MemRefType::get({dyn, dyn, dyn, dyn}, b.getF32Type(), layout);
}

MemRefType KernelEmitter::view3Type() const {
  int64_t dyn = ShapedType::kDynamic;
  auto layout = StridedLayoutAttr::get(b.getContext(), dyn, {dyn, dyn, dyn});
  return MemRefType::get({dyn, dyn, dyn}, b.getF32Type(), layout);
}

MemRefType KernelEmitter::lengthsType() const {
  return MemRefType::get({ShapedType::kDynamic}, b.getI64Type());
}

func::FuncOp KernelEmitter::createKernel(StringRef name, ArrayRef<Type> viewTypes,
                                         Operation *anchor, bool withCaptureGradients,
                                         bool withBlockMap) {
  SmallVector<Type> arguments(viewTypes);
  const bool withLengths = static_cast<bool>(op.getKvLengths());
  if (withLengths)
    arguments.push_back(lengthsType());
  const size_t firstCapture = arguments.size();
  for (Value capture : op.getCaptures())
    arguments.push_back(captureType(cast<RankedTensorType>(capture.getType())));
  if (!op.getCaptures().empty())
    arguments.push_back(faultType());
  const size_t firstGradient = arguments.size();
  SmallVector<Type> gradientTypes;
  if (withCaptureGradients)
    for (Value capture : op.getCaptures())
      if (auto type = cast<RankedTensorType>(capture.getType()); type.getElementType().isF32())
        gradientTypes.push_back(captureType(type));
  arguments.append(gradientTypes.begin(), gradientTypes.end());
  withBlockMap = withBlockMap && hasMask;
  if (withBlockMap)
    arguments.push_back(blockMapType());
  arguments.append(3, b.getIndexType());
  b.setInsertionPoint(anchor);
  auto kernel = func::FuncOp::create(b, loc, name, b.getFunctionType(arguments, {}));
  kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  b.setInsertionPointToStart(kernel.addEntryBlock());
  keyLengths = withLengths ? kernel.getArgument(viewTypes.size()) : Value();
  captures.clear();
  fault = Value();
  for (size_t position = 0; position < op.getCaptures().size(); ++position)
    captures.push_back(kernel.getArgument(firstCapture + position));
  if (!captures.empty())
    fault = kernel.getArgument(firstCapture + captures.size());
  captureGradients.clear();
  for (size_t position = 0; position < gradientTypes.size(); ++position)
    captureGradients.push_back(kernel.getArgument(firstGradient + position));
  blockMap = withBlockMap ? kernel.getArgument(firstGradient + gradientTypes.size()) : Value();
  return kernel;
}

MemRefType KernelEmitter::captureType(RankedTensorType type) const {
  return MemRefType::get(type.getShape(), type.getElementType());
}

MemRefType KernelEmitter::blockMapType() const {
  int64_t dyn = ShapedType::kDynamic;
  return MemRefType::get({dyn, dyn, dyn, dyn}, b.getIntegerType(8));
}

std::pair<bool, bool> KernelEmitter::blockMapDependence(AttentionOp op) {
  if (op.getMask().empty())
    return {false, false};
  Block &mask = op.getMask().front();
  // Per-batch key lengths change which keys of a block exist: the batch's own entries.
  return {!mask.getArgument(0).use_empty() || static_cast<bool>(op.getKvLengths()),
          !mask.getArgument(1).use_empty()};
}

MemRefType KernelEmitter::faultType() const {
  return MemRefType::get({ShapedType::kDynamic}, b.getI32Type());
}

std::tuple<Value, Value, Value> KernelEmitter::gridArguments(func::FuncOp kernel) {
  auto args = kernel.getArguments();
  size_t n = args.size();
  return {args[n - 3], args[n - 2], args[n - 1]};
}

Value KernelEmitter::keyLengthOf(Value keys, Value batch) {
  Value length = dim(keys, 2);
  if (!keyLengths)
    return length;
  // Lengths past the key view are clamped to it and negative ones to 0, so a bad length can
  // neither read outside k and v nor make a loop bound negative.
  Value given = memref::LoadOp::create(b, loc, keyLengths, ValueRange{batch});
  Value asIndex = arith::IndexCastOp::create(b, loc, b.getIndexType(), given);
  return minIndex(length, maxIndex(index(0), asIndex));
}

Value KernelEmitter::index(int64_t value) {
  return arith::ConstantIndexOp::create(b, loc, value);
}
Value KernelEmitter::f32(double value) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
}
Value KernelEmitter::minIndex(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
Value KernelEmitter::maxIndex(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
Value KernelEmitter::dim(Value memref, int64_t dimension) {
  return memref::DimOp::create(b, loc, memref, dimension);
}
Value KernelEmitter::toF32(Value indexValue) {
  Value asInt = arith::IndexCastOp::create(b, loc, b.getI64Type(), indexValue);
  return arith::SIToFPOp::create(b, loc, b.getF32Type(), asInt);
}

std::pair<Value, Value> KernelEmitter::keyRangeForRow(Value row, Value lo, Value hi) {
  if (window)
    lo = maxIndex(lo, arith::SubIOp::create(b, loc, row, index(*window)));
  if (causal)
    hi = minIndex(hi, arith::AddIOp::create(b, loc, row, index(1)));
  else if (window)
    hi = minIndex(hi, arith::AddIOp::create(b, loc, row, index(*window + 1)));
  return {lo, hi};
}

std::pair<Value, Value> KernelEmitter::keyRangeForTile(Value queryStart, Value rows,
                                                       Value keyLength) {
  Value lastRow = arith::SubIOp::create(b, loc, arith::AddIOp::create(b, loc, queryStart, rows),
                                        index(1));
  return {keyRangeForRow(queryStart, index(0), keyLength).first,
          keyRangeForRow(lastRow, index(0), keyLength).second};
}

Value KernelEmitter::alignDown(Value value, int64_t multiple) {
  return arith::MulIOp::create(b, loc, arith::DivSIOp::create(b, loc, value, index(multiple)),
                               index(multiple));
}

Value KernelEmitter::validCount(Value start, Value length, int64_t tile) {
  return maxIndex(index(0),
                  minIndex(index(tile), arith::SubIOp::create(b, loc, length, start)));
}

std::pair<Value, Value> KernelEmitter::queryRangeForKeys(Value lo, Value hi,
                                                         Value queryLength) {
  Value first = index(0), end = queryLength;
  if (causal)
    first = lo;
  else if (window)
    first = maxIndex(first, arith::SubIOp::create(b, loc, lo, index(*window)));
  if (window)
    end = minIndex(end, arith::AddIOp::create(b, loc, hi, index(*window)));
  return {first, end};
}

Value KernelEmitter::blockNeedsMask(Value rowStart, int64_t tileRows, Value keyStart,
                                    int64_t tileKeys, Value queryLength, Value keyLength) {
  auto greater = [&](Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, x, y);
  };
  auto orElse = [&](Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); };
  Value rowEnd = arith::AddIOp::create(b, loc, rowStart, index(tileRows));
  Value keyEnd = arith::AddIOp::create(b, loc, keyStart, index(tileKeys));
  Value lastRow = arith::SubIOp::create(b, loc, rowEnd, index(1));
  Value lastKey = arith::SubIOp::create(b, loc, keyEnd, index(1));
  Value needs = orElse(greater(rowEnd, queryLength), greater(keyEnd, keyLength));
  if (causal)
    needs = orElse(needs, greater(lastKey, rowStart));
  if (window) {
    // Some row's window starts after the block's first key ...
    needs = orElse(needs, greater(arith::SubIOp::create(b, loc, lastRow, index(*window)),
                                  keyStart));
    // ... or ends before its last key.
    if (!causal)
      needs = orElse(needs, greater(lastKey, arith::AddIOp::create(b, loc, rowStart,
                                                                   index(*window))));
  }
  return needs;
}

void KernelEmitter::maskTile(Value scores, Value rowStart, Value keyStart, Value queryLength,
                             Value keyLength, FloatAttr fill) {
  auto mask = TileMaskOp::create(b, loc, scores, rowStart, keyStart, queryLength, keyLength,
                                 UnitAttr(), IntegerAttr(), fill);
  if (causal)
    mask.setCausal(true);
  if (window)
    mask.setWindowAttr(b.getI64IntegerAttr(*window));
}

Value KernelEmitter::allocTile(ArrayRef<int64_t> shape) {
  auto type = MemRefType::get(shape, b.getF32Type());
  // Small tiles live on the stack; large ones (big head dims, 128 x 128 score tiles) on the
  // heap, so a kernel called on a thread with a small stack cannot overflow it.
  if (type.getNumElements() * 4 <= kMaxStackTileBytes)
    return memref::AllocaOp::create(b, loc, type);
  Value tile = memref::AllocOp::create(b, loc, type, b.getI64IntegerAttr(64));
  heapTiles.push_back(tile);
  return tile;
}

void KernelEmitter::releaseTiles() {
  for (Value tile : heapTiles)
    memref::DeallocOp::create(b, loc, tile);
  heapTiles.clear();
}

void KernelEmitter::scoreModTile(Value scores, Value rows, Value cols, Value batch, Value head,
                                 Value rowStart, Value keyStart, Value derivative) {
  if (!hasScoreMod)
    return;
  // The multiplier that could not be folded into q (softmax's log2 e) comes after the mod.
  auto modOp = TileScoreModOp::create(b, loc, scores, rows, cols, batch, head, rowStart,
                                      keyStart, derivative, captures, fault,
                                      b.getF64FloatAttr(normalizer.getScoreMultiplier()));
  copyCaptureRegion(op.getScoreMod(), modOp.getScoreMod(), captures);
}

void KernelEmitter::captureGradientTile(Value raw, Value grads, Value rows, Value cols,
                                        Value batch, Value head, Value rowStart,
                                        Value keyStart) {
  auto gradient = TileCaptureGradientOp::create(b, loc, raw, grads, rows, cols, batch, head,
                                                rowStart, keyStart, captures, fault,
                                                captureGradients);
  copyCaptureRegion(op.getScoreMod(), gradient.getScoreMod(), captures);
}

void KernelEmitter::copyNormalizerBody(Region &region) {
  copyRegion(op.getNormalizerBody(), region);
}

Value KernelEmitter::classifyBlock(Value rows, Value cols, Value batch, Value head,
                                   Value rowStart, Value colStart) {
  if (!hasMask)
    return Value();
  SmallVector<Value> mapIndices;
  if (blockMap) {
    // Entry [b or 0, h or 0, query tile, key block]: b and h only where the blocks' kinds
    // depend on them (blockMapDependence).
    auto [perBatch, perHead] = blockMapDependence(op);
    mapIndices = {perBatch ? batch : index(0), perHead ? head : index(0),
                  arith::DivSIOp::create(b, loc, rowStart, index(tiles.query)),
                  arith::DivSIOp::create(b, loc, colStart, index(tiles.key))};
  }
  auto classify = TileMaskClassifyOp::create(b, loc, b.getIndexType(), rows, cols, batch, head,
                                             rowStart, colStart, captures, fault, blockMap,
                                             mapIndices);
  copyCaptureRegion(op.getMask(), classify.getMask(), captures);
  return classify.getKind();
}

void KernelEmitter::unlessMaskedOut(Value rows, Value cols, Value batch, Value head,
                                    Value rowStart, Value colStart,
                                    function_ref<void(Value)> body) {
  Value kind = classifyBlock(rows, cols, batch, head, rowStart, colStart);
  if (!kind) {
    body(Value());
    return;
  }
  Value nonEmpty = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, kind, index(0));
  scf::IfOp::create(b, loc, nonEmpty, [&](OpBuilder &, Location) {
    body(kind);
    scf::YieldOp::create(b, loc);
  });
}

void KernelEmitter::maskRegionTile(Value kind, Value scores, Value rows, Value cols,
                                   Value batch, Value head, Value rowStart, Value colStart) {
  if (!kind)
    return;
  Value partial = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kind, index(2));
  scf::IfOp::create(b, loc, partial, [&](OpBuilder &, Location) {
    auto masked = TileMaskRegionOp::create(b, loc, scores, rows, cols, batch, head, rowStart,
                                           colStart, captures, fault);
    copyCaptureRegion(op.getMask(), masked.getMask(), captures);
    scf::YieldOp::create(b, loc);
  });
}

Value KernelEmitter::kvHeadOf(Value head, Value queryHeads, Value kvHeads) {
  Value group = arith::DivSIOp::create(b, loc, queryHeads, kvHeads);
  return arith::DivSIOp::create(b, loc, head, group);
}

Value KernelEmitter::loadRow(Value memref, ValueRange leadingIndices, int64_t width) {
  SmallVector<Value> indices(leadingIndices);
  indices.push_back(index(0));
  auto type = VectorType::get({width}, b.getF32Type());
  return vector::LoadOp::create(b, loc, type, memref, indices);
}

void KernelEmitter::storeRow(Value vector, Value memref, ValueRange leadingIndices) {
  SmallVector<Value> indices(leadingIndices);
  indices.push_back(index(0));
  vector::StoreOp::create(b, loc, vector, memref, indices);
}

Value KernelEmitter::splat(Value scalar, int64_t width) {
  return vector::BroadcastOp::create(b, loc, VectorType::get({width}, b.getF32Type()), scalar);
}

Value KernelEmitter::zeros(int64_t width) { return splat(f32(0.0), width); }

Value KernelEmitter::dot(Value x, Value y) {
  Value product = arith::MulFOp::create(b, loc, x, y);
  return vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, product);
}

Value KernelEmitter::zeroWhereMasked(Value value, Value score) {
  // Only a score_mod can produce -inf; without one the select would be dead weight.
  if (!hasScoreMod)
    return value;
  Value masked =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, score, f32(-INFINITY));
  return arith::SelectOp::create(b, loc, masked, f32(0.0), value);
}

double KernelEmitter::queryMultiplier() const {
  return hasScoreMod ? scale : scale * normalizer.getScoreMultiplier();
}

FailureOr<std::pair<Value, Value>> KernelEmitter::score(Value raw, Value batch, Value head,
                                                        Value row, Value key,
                                                        bool wantDerivative) {
  Value value = raw, derivative;
  if (hasScoreMod) {
    SmallVector<Value> arguments = {raw, batch, head, row, key};
    if (wantDerivative) {
      auto modded = emitRegionWithDerivative(b, loc, op.getScoreMod(), arguments);
      if (failed(modded))
        return failure();
      std::tie(value, derivative) = *modded;
    } else {
      value = inlineScalarRegion(b, op.getScoreMod(), arguments);
    }
    if (double multiplier = normalizer.getScoreMultiplier(); multiplier != 1.0)
      value = arith::MulFOp::create(b, loc, value, f32(multiplier));
  }
  return std::make_pair(value, derivative);
}
