#include "passes/MaskedScoreProbes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>

namespace mlir::attn {
namespace {
/// Builds the value in a scratch function, folds it and says whether it became 0.
bool foldsToZero(Location loc, function_ref<FailureOr<Value>(OpBuilder &)> build,
                 function_ref<void(RewritePatternSet &)> targetMath = nullptr) {
  MLIRContext *context = loc.getContext();
  OpBuilder b(context);
  OwningOpRef<ModuleOp> scratch = ModuleOp::create(loc);
  b.setInsertionPointToStart(scratch->getBody());
  auto function = func::FuncOp::create(b, loc, "probe", b.getFunctionType({}, {b.getF32Type()}));
  b.setInsertionPointToStart(function.addEntryBlock());
  FailureOr<Value> value = build(b);
  if (failed(value))
    return false;
  func::ReturnOp::create(b, loc, *value);
  RewritePatternSet patterns(context);
  if (targetMath)
    targetMath(patterns);
  (void)applyPatternsGreedily(function, std::move(patterns));
  auto ret = cast<func::ReturnOp>(function.getBody().front().getTerminator());
  FloatAttr folded;
  return matchPattern(ret.getOperand(0), m_Constant(&folded)) && folded.getValue().isZero();
}

Value f32Constant(OpBuilder &b, Location loc, float value) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
}
} // namespace

bool probabilityVanishesAtNegativeInfinity(
    NormalizerAttrInterface normalizer, Region &body, Location loc, bool fast,
    function_ref<void(RewritePatternSet &)> targetMath) {
  return foldsToZero(
      loc,
      [&](OpBuilder &b) -> FailureOr<Value> {
        Value score = f32Constant(b, loc, -INFINITY), keys = f32Constant(b, loc, 1.0f);
        return fast ? normalizer.emitFastProbability(b, loc, score, keys, body)
                    : normalizer.emitProbability(b, loc, score, keys, body);
      },
      targetMath);
}

bool gradientVanishesAtNegativeInfinity(NormalizerAttrInterface normalizer, Region &body,
                                        bool rowWise, Location loc) {
  auto probe = [&](float gradProb, float rowTerm) {
    return foldsToZero(loc, [&](OpBuilder &b) {
      return normalizer.emitScoreGradient(
          b, loc, f32Constant(b, loc, -INFINITY), f32Constant(b, loc, 0.0f),
          f32Constant(b, loc, gradProb), rowWise ? f32Constant(b, loc, rowTerm) : Value(),
          f32Constant(b, loc, 1.0f), body);
    });
  };
  return probe(1.0f, 0.0f) && (!rowWise || probe(0.0f, 1.0f));
}
} // namespace mlir::attn
