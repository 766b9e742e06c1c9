// Reads of captured tensors in the tile ops' scalar regions, lowered for the CPU and the GPU
// (CaptureReads.cpp).
#ifndef PASSES_CAPTUREREADS_H
#define PASSES_CAPTUREREADS_H

#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// One lowered read of a captured tensor: which capture, its indices clamped into bounds, and,
/// when they vary over the keys, the row-major offsets of the lanes (null when uniform).
struct CaptureRead {
  size_t capture;
  SmallVector<Value> clamped;
  Value offsets;
};

/// The replay hook (ElementwiseReplay.h) for a tile op's region that reads captured tensors:
/// `memref.load` of one of `captures` becomes a bounds-checked scalar load (uniform indices)
/// or vector.gather (indices varying over the lanes); a read out of bounds sets
/// fault[capture] = 1 and reads an element inside instead. Null for any other op. Each
/// lowered read is appended to `reads` when given.
FailureOr<Value> lowerCaptureRead(OpBuilder &builder, Location loc, Operation &op,
                                  ArrayRef<Value> operands, ValueRange captures, Value fault,
                                  SmallVectorImpl<CaptureRead> *reads = nullptr);

/// A contiguous (identity-layout) memref as rank 1; itself when it is rank 1.
Value flattenCapture(OpBuilder &builder, Location loc, Value memref);

} // namespace mlir::attn

#endif // PASSES_CAPTUREREADS_H
