// Verification of the scalar regions (score_mod, normalizer_body) of attn.attention.
#include "dialects/attn/AttnDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;

LogicalResult mlir::attn::verifyScalarRegion(Operation *op, Region &region, StringRef what,
                                             TypeRange expectedArgTypes, Type yieldType) {
  Block &block = region.front();
  if (block.getNumArguments() != expectedArgTypes.size())
    return op->emitOpError() << what << " must take " << expectedArgTypes.size()
                             << " arguments, got " << block.getNumArguments();
  for (auto [index, argument, expected] :
       llvm::enumerate(block.getArguments(), expectedArgTypes))
    if (argument.getType() != expected)
      return op->emitOpError() << what << " argument " << index << " must be " << expected
                               << ", got " << argument.getType();

  for (Operation &inner : block) {
    // A captured tensor (a region argument of tensor or memref type) is read element by
    // element, at indices the region computes, and its sizes may be read.
    Value source;
    std::optional<int64_t> dimIndex;
    if (auto extract = dyn_cast<tensor::ExtractOp>(inner)) {
      source = extract.getTensor();
    } else if (auto load = dyn_cast<memref::LoadOp>(inner)) {
      source = load.getMemRef();
    } else if (auto dim = dyn_cast<tensor::DimOp>(inner)) {
      source = dim.getSource();
      dimIndex = dim.getConstantIndex();
    } else if (auto dim = dyn_cast<memref::DimOp>(inner)) {
      source = dim.getSource();
      dimIndex = dim.getConstantIndex();
    }
    if (source) {
      auto argument = dyn_cast<BlockArgument>(source);
      if (!argument || argument.getOwner() != &block)
        return inner.emitOpError() << "in " << what
                                   << " must read a captured tensor (an argument of the region)";
      // The dim ops' own verifiers reject an index past the rank, not a negative one.
      if (dimIndex && *dimIndex < 0)
        return inner.emitOpError() << "in " << what << " reads dimension " << *dimIndex
                                   << " of a captured tensor: dimensions count from 0";
      continue;
    }
    Dialect *innerDialect = inner.getDialect();
    StringRef dialect = innerDialect ? innerDialect->getNamespace() : inner.getName().getDialectNamespace();
    bool scalarDialect = innerDialect && isa<arith::ArithDialect, math::MathDialect>(innerDialect);
    if (isa<ub::PoisonOp>(inner))
      return inner.emitOpError() << "is not allowed in " << what
                                 << ": an undefined value (canonicalization makes one of a "
                                    "tensor.dim or memref.dim at a negative dimension)";
    if (!scalarDialect && !isa<YieldOp>(inner))
      return inner.emitOpError() << "is not allowed in " << what
                                 << " (only arith and math ops, and tensor.extract and tensor.dim "
                                    "of a captured tensor), dialect '"
                                 << dialect << "'";
    if (inner.getNumRegions() != 0)
      return inner.emitOpError() << "with regions is not allowed in " << what;
  }

  auto yield = block.empty() ? YieldOp() : dyn_cast<YieldOp>(block.back());
  if (!yield)
    return op->emitOpError() << what << " must end with attn.yield";
  Type expected = yieldType ? yieldType : Float32Type::get(op->getContext());
  std::string expectedName;
  llvm::raw_string_ostream(expectedName) << expected;
  if (yield.getValues().size() != 1)
    return op->emitOpError() << what << " must yield exactly one " << expectedName << ", got "
                             << yield.getValues().size() << " values";
  if (yield.getValues().front().getType() != expected)
    return op->emitOpError() << what << " must yield " << expectedName << ", got "
                             << yield.getValues().front().getType();
  return success();
}

Value mlir::attn::inlineScalarRegion(OpBuilder &builder, Region &region, ValueRange arguments) {
  Block &block = region.front();
  IRMapping mapping;
  mapping.map(block.getArguments(), arguments);
  for (Operation &op : block.without_terminator())
    builder.clone(op, mapping);
  return mapping.lookup(block.getTerminator()->getOperand(0));
}
