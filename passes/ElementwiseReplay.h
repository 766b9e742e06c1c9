// Scalar IR replayed over vectors. The normalizer interface and the scalar regions emit
// target-independent scalar arith/math; a vector target emits them once into a scratch block
// and replays them with vector operands, so one formula serves every lane.
#ifndef PASSES_ELEMENTWISEREPLAY_H
#define PASSES_ELEMENTWISEREPLAY_H

#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// Calls `emitScalar` with scalar stand-ins of `arguments` (their element types), then
/// re-emits what it built at the builder's insertion point with the stand-ins replaced by
/// `arguments`: ops that read a vector become vector ops (scalar operands broadcast), ops that
/// read none stay scalar. Values from outside (e.g. the key length) are used as they are.
/// Returns the replayed values of what `emitScalar` returned; failure when it fails or builds
/// an op that is not elementwise (its diagnostics are emitted).
///
/// `replayOther`, when given, is asked first for every op: it may emit the op's replay itself
/// from the replayed operands (a captured tensor's read becomes a bounds-checked load or
/// gather) and return its value, return null to leave the op to the rule above, or fail.
using ReplayHook = function_ref<FailureOr<Value>(Operation &op, ArrayRef<Value> operands)>;
FailureOr<SmallVector<Value>>
replayElementwise(OpBuilder &builder, Location loc, ValueRange arguments,
                  function_ref<FailureOr<SmallVector<Value>>(OpBuilder &, ValueRange)>
                      emitScalar,
                  ReplayHook replayOther = {});

} // namespace mlir::attn

#endif // PASSES_ELEMENTWISEREPLAY_H
