// attn-cpu-fast-math: math.exp2, math.exp and math.tanh as polynomials the CPU evaluates in
// its vector units, instead of a libm call per lane (or per row, for the online softmax's
// correction). exp2 is range-reduced to 2^n * 2^f with f in [-0.5, 0.5] and a degree-6
// polynomial (relative error ~1e-7, 1-2 ulp); exp and tanh use MLIR's polynomial
// approximations.
#include "passes/CpuTileLowering.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNCPUFASTMATH
#include "passes/Passes.h.inc"

namespace {
struct Exp2Polynomial : OpRewritePattern<math::Exp2Op> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(math::Exp2Op op, PatternRewriter &rewriter) const override {
    Type type = op.getType();
    auto vectorType = dyn_cast<VectorType>(type);
    if (!getElementTypeOrSelf(type).isF32())
      return failure();
    Location loc = op.getLoc();
    Type i32Type = rewriter.getI32Type();
    if (vectorType)
      i32Type = VectorType::get(vectorType.getShape(), i32Type);
    auto constant = [&](double value) -> Value {
      TypedAttr attr = vectorType ? TypedAttr(DenseElementsAttr::get(vectorType, float(value)))
                                  : TypedAttr(rewriter.getF32FloatAttr(value));
      return arith::ConstantOp::create(rewriter, loc, attr);
    };
    auto intConstant = [&](int32_t value) -> Value {
      TypedAttr attr = vectorType
                           ? TypedAttr(DenseElementsAttr::get(cast<ShapedType>(i32Type), value))
                           : TypedAttr(rewriter.getI32IntegerAttr(value));
      return arith::ConstantOp::create(rewriter, loc, attr);
    };
    // The clamps ignore NaN (one vmaxps/vminps each); NaN is restored at the end. They keep
    // the two ends exact without selects: n = -127 makes 2^n's biased exponent 0, so the
    // result is exactly 0 (exp2(-inf) = 0, and below 2^-126.5 it flushes to 0); n = 128 makes
    // it the +inf bit pattern (exp2(+inf) = +inf, and from 2^127.5 on, a half-step early).
    auto noNaN = arith::FastMathFlagsAttr::get(rewriter.getContext(),
                                               arith::FastMathFlags::nnan);
    Value x = op.getOperand();
    Value clamped = arith::MaxNumFOp::create(
        rewriter, loc, arith::MinNumFOp::create(rewriter, loc, x, constant(128.0), noNaN),
        constant(-127.0), noNaN);
    Value n = math::RoundEvenOp::create(rewriter, loc, clamped);
    Value f = arith::SubFOp::create(rewriter, loc, clamped, n);
    // 2^f = e^(f ln 2) for f in [-0.5, 0.5]: Taylor coefficients ln2^i / i!.
    double coefficients[] = {1.0, M_LN2, M_LN2 * M_LN2 / 2, std::pow(M_LN2, 3) / 6,
                             std::pow(M_LN2, 4) / 24, std::pow(M_LN2, 5) / 120,
                             std::pow(M_LN2, 6) / 720};
    Value poly = constant(coefficients[6]);
    for (int i = 5; i >= 0; --i)
      poly = math::FmaOp::create(rewriter, loc, poly, f, constant(coefficients[i]));
    // 2^n from the exponent bits.
    Value exponent = arith::FPToSIOp::create(rewriter, loc, i32Type, n);
    Value biased = arith::AddIOp::create(rewriter, loc, exponent, intConstant(127));
    Value bits = arith::ShLIOp::create(rewriter, loc, biased, intConstant(23));
    Value scale = arith::BitcastOp::create(rewriter, loc, type, bits);
    Value result = arith::MulFOp::create(rewriter, loc, poly, scale);
    Value isNaN = arith::CmpFOp::create(rewriter, loc, arith::CmpFPredicate::UNO, x, x);
    result = arith::SelectOp::create(rewriter, loc, isNaN, x, result);
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct AttnCpuFastMathPass : impl::AttnCpuFastMathBase<AttnCpuFastMathPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateCpuFastMathPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace

void populateCpuFastMathPatterns(RewritePatternSet &patterns) {
  patterns.add<Exp2Polynomial>(patterns.getContext(), /*benefit=*/2);
  populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
    return name == "exp" || name == "tanh" || name == math::ExpOp::getOperationName() ||
           name == math::TanhOp::getOperationName();
  });
}
} // namespace mlir::attn
