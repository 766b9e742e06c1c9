// Canonicalization patterns of the attn ops. Each one turns a general form into the form the
// code generators specialize on, and only where the result is provably the same function at
// every size: static sizes in the types never justify a rewrite, since the runtime calls one
// kernel at all lengths (a window covering a static length, say, is kept).
#include "dialects/attn/AttnDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {
Value yieldedValue(Region &region) {
  return cast<YieldOp>(region.front().back()).getValues().front();
}

/// Matches `lhs op rhs` in either operand order where one side is a float constant; returns
/// the other side and the constant.
template <typename BinaryOp>
bool matchWithConstant(Value value, Value &other, double &constant) {
  auto op = value.getDefiningOp<BinaryOp>();
  if (!op)
    return false;
  FloatAttr attr;
  if (matchPattern(op.getRhs(), m_Constant(&attr))) {
    other = op.getLhs();
  } else if (matchPattern(op.getLhs(), m_Constant(&attr))) {
    other = op.getRhs();
  } else {
    return false;
  }
  constant = attr.getValueAsDouble();
  return true;
}

/// Recognizes relu(s) * c, i.e. `maximumf(s, 0)` optionally multiplied by a positive constant.
std::optional<double> matchRelu(Value result, Value score) {
  double scale = 1.0;
  Value inner = result;
  if (Value scaled; matchWithConstant<arith::MulFOp>(result, scaled, scale))
    inner = scaled;
  Value operand;
  double zero = 1;
  if (!matchWithConstant<arith::MaximumFOp>(inner, operand, zero) || zero != 0.0 ||
      operand != score || !(scale > 0))
    return std::nullopt;
  return scale;
}

/// Recognizes 1 / (1 + exp(-(s + b))) and returns b (0 when s is not shifted).
std::optional<double> matchSigmoid(Value result, Value score) {
  auto divide = result.getDefiningOp<arith::DivFOp>();
  if (!divide || !matchPattern(divide.getLhs(), m_OneFloat()))
    return std::nullopt;
  Value expValue;
  double one = 0;
  if (!matchWithConstant<arith::AddFOp>(divide.getRhs(), expValue, one) || one != 1.0)
    return std::nullopt;
  auto exp = expValue.getDefiningOp<math::ExpOp>();
  auto negate = exp ? exp.getOperand().getDefiningOp<arith::NegFOp>() : arith::NegFOp();
  if (!negate)
    return std::nullopt;
  Value shifted = negate.getOperand();
  if (shifted == score)
    return 0.0;
  Value base;
  double bias = 0;
  if (matchWithConstant<arith::AddFOp>(shifted, base, bias) && base == score)
    return bias;
  return std::nullopt;
}

/// A custom normalizer whose body is a known elementwise form becomes that normalizer, so
/// that targets use its specialized emission (e.g. tanh.approx for sigmoid).
struct CustomNormalizerToKnownForm : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttentionOp op, PatternRewriter &rewriter) const override {
    if (!isa<CustomAttr>(op.getNormalizer()) || op.getNormalizerBody().empty())
      return failure();
    Region &body = op.getNormalizerBody();
    Value score = body.front().getArgument(0);
    Value result = yieldedValue(body);
    MLIRContext *context = op.getContext();
    auto f64Attr = [&](double value) {
      return FloatAttr::get(Float64Type::get(context), value);
    };
    Attribute known;
    if (std::optional<double> scale = matchRelu(result, score))
      known = ReluAttr::get(context, f64Attr(*scale));
    else if (std::optional<double> bias = matchSigmoid(result, score))
      known = SigmoidAttr::get(context, f64Attr(*bias));
    if (!known)
      return failure();
    rewriter.eraseBlock(&body.front());
    rewriter.modifyOpInPlace(
        op, [&] { op.setNormalizerAttr(cast<NormalizerAttrInterface>(known)); });
    return success();
  }
};

/// A score_mod that yields its score unchanged does nothing.
struct DropIdentityScoreMod : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttentionOp op, PatternRewriter &rewriter) const override {
    Region &mod = op.getScoreMod();
    if (mod.empty() || yieldedValue(mod) != mod.front().getArgument(0))
      return failure();
    rewriter.eraseBlock(&mod.front());
    rewriter.modifyOpInPlace(op, [] {});
    return success();
  }
};

/// A mask region that yields constant true masks nothing: dropped, so the kernels do not
/// classify every block for it.
struct DropAlwaysTrueMask : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttentionOp op, PatternRewriter &rewriter) const override {
    Region &mask = op.getMask();
    APInt keep;
    if (mask.empty() || !matchPattern(yieldedValue(mask), m_ConstantInt(&keep)) || keep.isZero())
      return failure();
    rewriter.eraseBlock(&mask.front());
    rewriter.modifyOpInPlace(op, [] {});
    return success();
  }
};

/// A score_mod that only multiplies the score by a positive constant c is a scale: fold it
/// into `scale` (scale * c, with the 1/sqrt(D) default made explicit).
struct FoldConstantScoreModIntoScale : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttentionOp op, PatternRewriter &rewriter) const override {
    Region &mod = op.getScoreMod();
    if (mod.empty())
      return failure();
    Value scored;
    double factor = 0;
    if (!matchWithConstant<arith::MulFOp>(yieldedValue(mod), scored, factor) ||
        scored != mod.front().getArgument(0) || !(factor > 0) || !std::isfinite(factor))
      return failure();
    float newScale = op.getEffectiveScale() * static_cast<float>(factor);
    if (!std::isfinite(newScale) || !(newScale > 0))
      return failure();
    rewriter.eraseBlock(&mod.front());
    rewriter.modifyOpInPlace(op, [&] { op.setScaleAttr(rewriter.getF32FloatAttr(newScale)); });
    return success();
  }
};

/// In evaluation mode the power iteration does not update u.
struct ForwardEvalUpdatedU : OpRewritePattern<ReparamLinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ReparamLinearOp op, PatternRewriter &rewriter) const override {
    if (op.getTraining() || op.getUpdatedU().use_empty())
      return failure();
    rewriter.replaceAllUsesWith(op.getUpdatedU(), op.getU());
    return success();
  }
};

/// A dimension read at a constant negative index is undefined (memref.dim, tensor.dim); the
/// result becomes ub.poison. This also keeps the op away from MLIR 22's gpu canonicalization
/// SimplifyDimOfAllocOp, which indexes the type's shape with it unchecked and reads out of
/// bounds (a crash of any canonicalizer run once the gpu dialect is loaded, as in our GPU
/// pipeline; test/fuzz/regressions/dim-negative-index.mlir). The benefit puts this pattern
/// before every other one on the op.
template <typename DimOp>
struct NegativeDimIndexIsPoison : OpRewritePattern<DimOp> {
  NegativeDimIndexIsPoison(MLIRContext *context)
      : OpRewritePattern<DimOp>(context, /*benefit=*/100) {}
  LogicalResult matchAndRewrite(DimOp op, PatternRewriter &rewriter) const override {
    std::optional<int64_t> index = op.getConstantIndex();
    if (!index || *index >= 0)
      return failure();
    rewriter.replaceOpWithNewOp<ub::PoisonOp>(op, op.getType());
    return success();
  }
};
} // namespace

void AttnDialect::getCanonicalizationPatterns(RewritePatternSet &patterns) const {
  patterns.add<NegativeDimIndexIsPoison<memref::DimOp>, NegativeDimIndexIsPoison<tensor::DimOp>>(
      getContext());
}

void AttentionOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                              MLIRContext *context) {
  patterns.add<CustomNormalizerToKnownForm, DropIdentityScoreMod,
               FoldConstantScoreModIntoScale, DropAlwaysTrueMask>(context);
}

void ReparamLinearOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                                  MLIRContext *context) {
  patterns.add<ForwardEvalUpdatedU>(context);
}
