// attn-legalize: make the defaults of attn.attention explicit attributes, and the additive bias
// a captured tensor read by the score_mod. Only defaults that hold for every call are filled:
// the scale 1/sqrt(D) (D is static). Normalizer parameters that default to a function of the
// key length stay unset; the kernels compute them from the run-time length, so a size written
// in the IR's types never changes what a variant means.
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLEGALIZE
#include "passes/Passes.h.inc"

/// `bias(%b)` becomes the last capture, and the score_mod (an identity one when there is none)
/// adds `%b[b or 0, h or 0, q, k]` to its result: a broadcast dimension is a static 1 in the
/// bias's type. The bias's gradient is then a capture gradient like any other.
LogicalResult moveBiasIntoCaptures(AttentionOp op) {
  Value bias = op.getBias();
  if (!bias)
    return success();
  auto type = cast<RankedTensorType>(bias.getType());
  if (!type.getElementType().isF32())
    return op.emitOpError() << "the tiled kernels take an f32 bias, got "
                            << type.getElementType() << " (convert it first)";
  Location loc = op.getLoc();
  op.getBiasMutable().clear();
  op.getCapturesMutable().append(bias);

  Region &mask = op.getMask();
  if (!mask.empty())
    mask.front().addArgument(type, loc);
  Region &mod = op.getScoreMod();
  if (mod.empty()) {
    Block *block = new Block();
    mod.push_back(block);
    for (Type argument : op.getRegionArgumentTypes(/*withScore=*/true))
      block->addArgument(argument, loc);
    OpBuilder builder = OpBuilder::atBlockEnd(block);
    YieldOp::create(builder, loc, ValueRange{block->getArgument(0)});
  } else {
    mod.front().addArgument(type, loc);
  }
  Block &block = mod.front();
  auto yield = cast<YieldOp>(block.getTerminator());
  OpBuilder builder(yield);
  Value zero = arith::ConstantIndexOp::create(builder, loc, 0);
  Value batch = type.getDimSize(0) == 1 ? zero : block.getArgument(1);
  Value head = type.getDimSize(1) == 1 ? zero : block.getArgument(2);
  Value element = tensor::ExtractOp::create(
      builder, loc, block.getArguments().back(),
      ValueRange{batch, head, block.getArgument(3), block.getArgument(4)});
  Value biased = arith::AddFOp::create(builder, loc, yield.getValues().front(), element);
  yield.getValuesMutable().assign(biased);
  return success();
}

namespace {

struct AttnLegalizePass : impl::AttnLegalizeBase<AttnLegalizePass> {
  void runOnOperation() override {
    WalkResult result = getOperation()->walk([](AttentionOp op) {
      if (!op.getScaleAttr())
        op.setScaleAttr(Builder(op).getF32FloatAttr(op.getEffectiveScale()));
      return failed(moveBiasIntoCaptures(op)) ? WalkResult::interrupt() : WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
} // namespace mlir::attn
