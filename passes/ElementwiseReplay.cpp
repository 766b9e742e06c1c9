#include "passes/ElementwiseReplay.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/IR/OpDefinition.h"

using namespace mlir;

FailureOr<SmallVector<Value>> mlir::attn::replayElementwise(
    OpBuilder &builder, Location loc, ValueRange arguments,
    function_ref<FailureOr<SmallVector<Value>>(OpBuilder &, ValueRange)> emitScalar,
    ReplayHook replayOther) {
  // The scratch block lives in a detached region; it is destroyed on return.
  Region scratch;
  Block *block = new Block();
  scratch.push_back(block);
  for (Value argument : arguments)
    block->addArgument(getElementTypeOrSelf(argument.getType()), loc);
  OpBuilder scalarBuilder(builder.getContext()); // the scratch region has no parent op
  scalarBuilder.setInsertionPointToStart(block);
  FailureOr<SmallVector<Value>> scalarResults = emitScalar(scalarBuilder, block->getArguments());
  if (failed(scalarResults)) {
    block->dropAllDefinedValueUses();
    return failure();
  }

  IRMapping mapping;
  mapping.map(block->getArguments(), arguments);
  // The lane count of the vectors being replayed over (all arguments share it).
  VectorType laneType;
  for (Value argument : arguments)
    if (auto type = dyn_cast<VectorType>(argument.getType()))
      laneType = type;
  auto isVector = [](Value v) { return isa<VectorType>(v.getType()); };
  for (Operation &op : *block) {
    SmallVector<Value> operands;
    bool varying = false;
    for (Value operand : op.getOperands()) {
      Value mapped = mapping.lookupOrDefault(operand);
      varying |= isVector(mapped);
      operands.push_back(mapped);
    }
    if (replayOther) {
      FailureOr<Value> replayed = replayOther(op, operands);
      if (failed(replayed)) {
        block->dropAllDefinedValueUses();
        return failure();
      }
      if (*replayed) {
        mapping.map(op.getResult(0), *replayed);
        continue;
      }
    }
    if (!varying || !laneType) {
      builder.clone(op, mapping);
      continue;
    }
    if (!op.hasTrait<OpTrait::Elementwise>() || op.getNumRegions() != 0) {
      op.emitOpError("cannot be replayed over vectors: it is not elementwise");
      block->dropAllDefinedValueUses();
      return failure();
    }
    // Clone (keeping properties such as fastmath flags), then widen operands and results.
    Operation *vectorOp = builder.clone(op, mapping);
    for (auto [position, operand] : llvm::enumerate(operands)) {
      if (isVector(operand))
        continue;
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPoint(vectorOp);
      vectorOp->setOperand(position,
                           vector::BroadcastOp::create(
                               builder, loc,
                               VectorType::get(laneType.getShape(), operand.getType()), operand));
    }
    for (OpResult result : vectorOp->getResults())
      result.setType(VectorType::get(laneType.getShape(), result.getType()));
  }
  SmallVector<Value> results;
  for (Value value : *scalarResults)
    results.push_back(mapping.lookupOrDefault(value));
  block->dropAllDefinedValueUses();
  return results;
}
