// The attn passes. Registration happens through registerAttnPasses().
#ifndef PASSES_PASSES_H
#define PASSES_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace mlir::attn {
class AttnDialect;
#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

class AttentionOp;
/// attn-legalize's rewrite of an f32 `bias` operand into the op's last capture, added to the
/// score_mod's result at [b or 0, h or 0, q, k] (a broadcast dimension is a static 1 in the
/// bias's type). No-op without a bias; a diagnostic on the op when the bias is not f32. The run
/// time applies it before it collects a variant's captures, so the call passes the bias as one.
LogicalResult moveBiasIntoCaptures(AttentionOp op);
} // namespace mlir::attn

#endif // PASSES_PASSES_H
