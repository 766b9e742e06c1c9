// The attn dialect: ops, normalizer attributes and the normalizer interface.
#ifndef DIALECTS_ATTN_ATTNDIALECT_H
#define DIALECTS_ATTN_ATTNDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/attn/AttnDialect.h.inc"
#include "dialects/attn/AttnAttrInterfaces.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/attn/AttnAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/attn/AttnOps.h.inc"

namespace mlir::attn {
/// Checks that a scalar region has one block with arguments of the given types, holds only
/// arith/math ops and element reads (tensor.extract, memref.load) of its own tensor or memref
/// arguments (the captured tensors; IsolatedFromAbove forbids reading anything else), and ends
/// in an attn.yield of one `yieldType` (f32 when null). `what` names the region in diagnostics.
LogicalResult verifyScalarRegion(Operation *op, Region &region, StringRef what,
                                 TypeRange expectedArgTypes, Type yieldType = {});

/// Emits the ops of a scalar region with its arguments bound to `arguments`; returns the
/// yielded value.
Value inlineScalarRegion(OpBuilder &builder, Region &region, ValueRange arguments);

/// Emits the scalar region `region` with its arguments bound to `arguments` and returns the
/// yielded value together with its derivative with respect to `arguments[0]`, by forward-mode
/// symbolic differentiation of the arith/math ops. Fails with a diagnostic at `loc` naming the
/// first op on the derivative path it cannot differentiate.
FailureOr<std::pair<Value, Value>> emitRegionWithDerivative(OpBuilder &builder, Location loc,
                                                            Region &region,
                                                            ValueRange arguments);
/// emitRegionWithDerivative with respect to several values of `region` at once: `seeds` are
/// its block arguments or results of its ops (a captured tensor's element read by the
/// score_mod). Returns the yielded value, then one derivative per seed.
FailureOr<SmallVector<Value>> emitRegionWithTangents(OpBuilder &builder, Location loc,
                                                     Region &region, ValueRange arguments,
                                                     ArrayRef<Value> seeds);
} // namespace mlir::attn

#endif // DIALECTS_ATTN_ATTNDIALECT_H
