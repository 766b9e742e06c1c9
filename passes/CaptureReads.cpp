// Reads of captured tensors in a tile op's scalar region (memref.load of a capture), lowered
// as the elementwise replay meets them, for the CPU (over vectors of keys) and the GPU (one
// register at a time): indices that vary over the keys become one vector.gather from the
// flattened capture, uniform ones a scalar load. Every index is checked against the capture's
// bounds: an index outside is replaced by 0 (so memory is never touched outside the tensor)
// and sets the capture's fault flag, which the run time turns into an error naming the
// capture. A silent clamp would be a wrong answer.
#include "passes/CaptureReads.h"
#include "passes/CpuTileLowering.h"

namespace mlir::attn {
namespace {
Value broadcastTo(Emit &e, Value value, VectorType lanes) {
  if (!lanes || isa<VectorType>(value.getType()))
    return value;
  return vector::BroadcastOp::create(e.b, e.loc, lanes.clone(value.getType()), value);
}

Value constantLike(Emit &e, Value like, int64_t value) {
  Value scalar = e.index(value);
  if (auto type = dyn_cast<VectorType>(like.getType()))
    return vector::BroadcastOp::create(e.b, e.loc, type, scalar);
  return scalar;
}
} // namespace

Value flattenCapture(OpBuilder &builder, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  if (type.getRank() == 1)
    return memref;
  SmallVector<ReassociationIndices> all(1);
  for (int64_t dimension = 0; dimension < type.getRank(); ++dimension)
    all.front().push_back(dimension);
  return memref::CollapseShapeOp::create(builder, loc, memref, all);
}

FailureOr<Value> lowerCaptureRead(OpBuilder &builder, Location loc, Operation &op,
                                  ArrayRef<Value> operands, ValueRange captures, Value fault,
                                  SmallVectorImpl<CaptureRead> *reads) {
  auto load = dyn_cast<memref::LoadOp>(op);
  if (!load)
    return Value();
  Value memref = operands[0];
  auto position = llvm::find(captures, memref) - captures.begin();
  if (position == static_cast<ptrdiff_t>(captures.size()))
    return Value(); // not a capture: no business of ours
  Emit e{builder, loc};
  auto type = cast<MemRefType>(memref.getType());
  ArrayRef<Value> indices = operands.drop_front();

  // The lanes the read varies over (null when every index is uniform).
  VectorType lanes;
  for (Value index : indices)
    if (auto vectorType = dyn_cast<VectorType>(index.getType()))
      lanes = vectorType;

  // In bounds per lane: 0 <= index < dim for every dimension.
  SmallVector<Value> sizes, clamped;
  Value inBounds;
  for (auto [dimension, index] : llvm::enumerate(indices)) {
    Value size = memref::DimOp::create(builder, loc, memref, dimension);
    sizes.push_back(size);
    Value sizeLike = broadcastTo(e, size, lanes);
    Value index_ = broadcastTo(e, index, lanes);
    Value low = arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::sge, index_,
                                      constantLike(e, index_, 0));
    Value high =
        arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::slt, index_, sizeLike);
    Value ok = arith::AndIOp::create(builder, loc, low, high);
    inBounds = inBounds ? arith::AndIOp::create(builder, loc, inBounds, ok) : ok;
    // Each index clamped on its own: an outside lane reads some element inside.
    clamped.push_back(
        arith::SelectOp::create(builder, loc, ok, index_, constantLike(e, index_, 0)).getResult());
  }
  if (inBounds) {
    Value anyOutside = inBounds;
    if (lanes)
      anyOutside = vector::ReductionOp::create(builder, loc, vector::CombiningKind::AND, inBounds);
    anyOutside = arith::XOrIOp::create(
        builder, loc, anyOutside,
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true)));
    scf::IfOp::create(builder, loc, anyOutside, [&](OpBuilder &, Location) {
      Value one = arith::ConstantOp::create(builder, loc, builder.getI32IntegerAttr(1));
      // Atomic: tiles on several threads may flag one capture at once.
      memref::AtomicRMWOp::create(builder, loc, arith::AtomicRMWKind::assign, one, fault,
                                  ValueRange{e.index(position)});
      scf::YieldOp::create(builder, loc);
    });
  }

  CaptureRead read{static_cast<size_t>(position), clamped, Value()};
  if (!lanes) {
    if (reads)
      reads->push_back(read);
    return memref::LoadOp::create(builder, loc, memref, clamped).getResult();
  }

  // Row-major offsets into the flattened capture (the run time passes captures contiguous).
  Value offsets;
  Value stride = e.index(1);
  for (int64_t dimension = static_cast<int64_t>(clamped.size()) - 1; dimension >= 0;
       --dimension) {
    Value term = arith::MulIOp::create(builder, loc, broadcastTo(e, clamped[dimension], lanes),
                                       broadcastTo(e, stride, lanes));
    offsets = offsets ? arith::AddIOp::create(builder, loc, offsets, term) : term;
    stride = arith::MulIOp::create(builder, loc, stride, sizes[dimension]);
  }
  read.offsets = offsets;
  if (reads)
    reads->push_back(read);
  Value flat = flattenCapture(builder, loc, memref);
  auto resultType = lanes.clone(type.getElementType());
  Value every = arith::ConstantOp::create(
      builder, loc, lanes.clone(builder.getI1Type()),
      DenseElementsAttr::get(lanes.clone(builder.getI1Type()), true));
  Value passThrough = e.zeros(resultType);
  return vector::GatherOp::create(builder, loc, resultType, flat, ValueRange{e.index(0)},
                                  offsets, every, passThrough, IntegerAttr())
      .getResult();
}
} // namespace mlir::attn
