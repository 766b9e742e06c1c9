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
/// Checks that a scalar region has one block with `numArgs` arguments of the given types,
/// holds only arith/math ops (IsolatedFromAbove forbids captures) and ends in an attn.yield of one
/// f32. `what` names the region in diagnostics.
LogicalResult verifyScalarRegion(Operation *op, Region &region, StringRef what,
                                 TypeRange expectedArgTypes);
} // namespace mlir::attn

#endif // DIALECTS_ATTN_ATTNDIALECT_H
