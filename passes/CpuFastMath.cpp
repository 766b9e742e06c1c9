// attn-cpu-fast-math: math.exp2, math.exp and math.tanh as polynomials the CPU evaluates in
// its vector units, instead of a libm call per lane (or per row, for the online softmax's
// correction). exp2 is range-reduced to 2^n * 2^f with n = floor(x), f in [0, 1) and a
// degree-5 minimax polynomial (relative error 1.4e-7 evaluated in f32, ~1 ulp; exact at
// integers); exp and tanh use MLIR's polynomial approximations.
//
// With `avx512` (the kernels target AVX-512), vectors of a multiple of 16 lanes take fewer
// instructions per 16 scores: exp2 is vreduceps (f = x - floor(x)), five FMAs and vscalefps
// (p * 2^floor(x)), 7 instead of 15, and the logistic 1 / (1 + exp(y)) (sigmoid's
// probability) is that exp2 followed by vrcp14ps and one Newton step instead of MLIR's exp
// polynomial and a division (vdivps, ~10 cycles per 16 lanes).
#include "passes/CpuTileLowering.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>
#include <limits>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNCPUFASTMATH
#include "passes/Passes.h.inc"

namespace {
/// 2^f for f in [0, 1): the minimax polynomial of degree 5 for the relative error with the
/// constant term held at 1 (so 2^n is exact), fitted by the Remez exchange in float64:
/// max relative error 8.2e-8, 1.4e-7 with f32 coefficients and FMAs. Lowest degree first.
constexpr double kExp2Coefficients[] = {1.0,
                                        0.6931513118046019,
                                        0.24016445015508872,
                                        0.05579991310373756,
                                        0.009017030322443316,
                                        0.0018671300698768483};

/// Splat (or scalar) f32 and i32 constants shaped like `like`.
struct Constants {
  PatternRewriter &rewriter;
  Location loc;
  Type like;
  Value f32(double value) {
    auto vectorType = dyn_cast<VectorType>(like);
    TypedAttr attr = vectorType ? TypedAttr(DenseElementsAttr::get(vectorType, float(value)))
                                : TypedAttr(rewriter.getF32FloatAttr(value));
    return arith::ConstantOp::create(rewriter, loc, attr);
  }
  Value i32(int32_t value) {
    auto vectorType = dyn_cast<VectorType>(like);
    TypedAttr attr =
        vectorType ? TypedAttr(DenseElementsAttr::get(vectorType.clone(rewriter.getI32Type()),
                                                      value))
                   : TypedAttr(rewriter.getI32IntegerAttr(value));
    return arith::ConstantOp::create(rewriter, loc, attr);
  }
  /// p(f) by Horner's rule, one FMA per degree.
  Value exp2Polynomial(Value f) {
    Value poly = f32(kExp2Coefficients[5]);
    for (int i = 4; i >= 0; --i)
      poly = math::FmaOp::create(rewriter, loc, poly, f, f32(kExp2Coefficients[i]));
    return poly;
  }
};

/// The AVX-512 building blocks, on vector<16xf32>.
struct Avx512 {
  PatternRewriter &rewriter;
  Location loc;
  VectorType v16 = VectorType::get({16}, Float32Type::get(rewriter.getContext()));

  Value scalar(Type type, int64_t value) {
    return arith::ConstantOp::create(rewriter, loc, rewriter.getIntegerAttr(type, value));
  }
  Value allLanes() { return scalar(rewriter.getI16Type(), -1); }
  /// _MM_FROUND_CUR_DIRECTION: the intrinsics' rounding / exception argument.
  Value currentRounding() { return scalar(rewriter.getI32Type(), 4); }
  Value intrinsic(StringRef name, ValueRange operands) {
    return LLVM::CallIntrinsicOp::create(rewriter, loc, v16, rewriter.getStringAttr(name),
                                         operands)
        .getResult(0);
  }
  /// 2^x: f = x - floor(x) in [0, 1) (vreduceps, imm 9: round down, no precision exception;
  /// 0 at +-inf, NaN stays NaN), p(f), then p * 2^floor(x) (vscalefps, which rounds once: 0
  /// at -inf, the denormals right, +inf past the largest float, NaN when x is NaN).
  /// With `saturate`, vscalefps rounds toward zero: past the largest float it gives that
  /// float, not +inf (only x = +inf still gives +inf).
  Value exp2(Value x, bool saturate = false) {
    Value f = intrinsic("llvm.x86.avx512.mask.reduce.ps.512",
                        {x, scalar(rewriter.getI32Type(), 9), x, allLanes(), currentRounding()});
    Value p = Constants{rewriter, loc, v16}.exp2Polynomial(f);
    // The op's operands go to llvm.x86.avx512.mask.scalef.ps.512 in order: (value, exponent,
    // pass-through, mask, rounding), whatever the op's names for them say.
    // 11: _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC.
    return x86vector::MaskScaleFOp::create(
        rewriter, loc, v16, p, x, p, allLanes(),
        saturate ? scalar(rewriter.getI32Type(), 11) : currentRounding());
  }
  /// min(limit, x) as vminps, which returns its second operand when either is NaN: NaN stays.
  Value atMost(Value x, double limit) {
    return intrinsic("llvm.x86.avx512.min.ps.512",
                     {Constants{rewriter, loc, v16}.f32(limit), x, currentRounding()});
  }
};

/// The widest vector the AVX-512 forms split into 16-lane slices: the tile lowering's rows
/// are at most a few hundred lanes. A wider one (only hand-written IR has them: a fuzzer input
/// of 2^31 lanes took minutes here) keeps the portable polynomial, which stays one op per step.
constexpr int64_t kMaxSplitLanes = 4096;

/// A 1-D f32 vector of 16k lanes, k ≤ kMaxSplitLanes / 16: what the AVX-512 forms take.
bool splitsInto16Lanes(Type type) {
  auto vector = dyn_cast<VectorType>(type);
  return vector && vector.getRank() == 1 && !vector.isScalable() &&
         vector.getElementType().isF32() && vector.getNumElements() % 16 == 0 &&
         vector.getNumElements() <= kMaxSplitLanes;
}

/// Applies `chunk` to each 16-lane slice of a vector that splitsInto16Lanes and reassembles
/// the results; null where `value` has another type.
Value per16Lanes(PatternRewriter &rewriter, Location loc, ValueRange values,
                 function_ref<Value(ValueRange)> chunk) {
  if (!splitsInto16Lanes(values.front().getType()))
    return {};
  auto type = cast<VectorType>(values.front().getType());
  int64_t width = type.getNumElements();
  if (width == 16)
    return chunk(values);
  Value result = arith::ConstantOp::create(
      rewriter, loc, DenseElementsAttr::get(type, rewriter.getF32FloatAttr(0.0f)));
  for (int64_t offset = 0; offset < width; offset += 16) {
    SmallVector<Value> slices;
    for (Value value : values)
      slices.push_back(vector::ExtractStridedSliceOp::create(rewriter, loc, value, {offset},
                                                             {16}, {1}));
    result = vector::InsertStridedSliceOp::create(rewriter, loc, chunk(slices), result, {offset},
                                                  {1});
  }
  return result;
}

struct Exp2Polynomial : OpRewritePattern<math::Exp2Op> {
  Exp2Polynomial(MLIRContext *context, bool avx512)
      : OpRewritePattern(context, /*benefit=*/2), avx512(avx512) {}
  bool avx512;

  LogicalResult matchAndRewrite(math::Exp2Op op, PatternRewriter &rewriter) const override {
    Type type = op.getType();
    if (!getElementTypeOrSelf(type).isF32())
      return failure();
    Location loc = op.getLoc();
    Value x = op.getOperand();
    if (avx512)
      if (Value result = per16Lanes(rewriter, loc, x, [&](ValueRange chunk) {
            return Avx512{rewriter, loc}.exp2(chunk[0]);
          })) {
        rewriter.replaceOp(op, result);
        return success();
      }
    Constants c{rewriter, loc, type};
    // The clamps ignore NaN (one vmaxps/vminps each); NaN is restored at the end. They keep
    // the two ends exact without selects: n = -127 makes 2^n's biased exponent 0, so the
    // result is exactly 0 (exp2(-inf) = 0, and below 2^-126 it flushes to 0); n = 128 makes
    // it the +inf bit pattern (exp2(+inf) = +inf, and from 2^128 on).
    auto noNaN = arith::FastMathFlagsAttr::get(rewriter.getContext(),
                                               arith::FastMathFlags::nnan);
    Value clamped = arith::MaxNumFOp::create(
        rewriter, loc, arith::MinNumFOp::create(rewriter, loc, x, c.f32(128.0), noNaN),
        c.f32(-127.0), noNaN);
    Value n = math::FloorOp::create(rewriter, loc, clamped);
    Value f = arith::SubFOp::create(rewriter, loc, clamped, n);
    Value poly = c.exp2Polynomial(f);
    // 2^n from the exponent bits.
    Type i32Type = c.i32(0).getType();
    Value exponent = arith::FPToSIOp::create(rewriter, loc, i32Type, n);
    Value biased = arith::AddIOp::create(rewriter, loc, exponent, c.i32(127));
    Value bits = arith::ShLIOp::create(rewriter, loc, biased, c.i32(23));
    Value scale = arith::BitcastOp::create(rewriter, loc, type, bits);
    Value result = arith::MulFOp::create(rewriter, loc, poly, scale);
    Value isNaN = arith::CmpFOp::create(rewriter, loc, arith::CmpFPredicate::UNO, x, x);
    result = arith::SelectOp::create(rewriter, loc, isNaN, x, result);
    rewriter.replaceOp(op, result);
    return success();
  }
};

/// True where `value` is the constant 1.0 (scalar or splat).
bool isOne(Value value) { return matchPattern(value, m_OneFloat()); }

/// The logistic 1 / (1 + exp(y)) or 1 / (1 + 2^y) as written (the normalizer's forms): y, or
/// null. `base2` tells which.
Value matchLogistic(arith::DivFOp op, bool *base2 = nullptr) {
  auto sum = op.getRhs().getDefiningOp<arith::AddFOp>();
  if (!isOne(op.getLhs()) || !sum)
    return {};
  Value other = isOne(sum.getLhs()) ? sum.getRhs() : isOne(sum.getRhs()) ? sum.getLhs() : Value();
  Operation *power = other ? other.getDefiningOp() : nullptr;
  if (!isa_and_nonnull<math::ExpOp, math::Exp2Op>(power))
    return {};
  if (base2)
    *base2 = isa<math::Exp2Op>(power);
  return power->getOperand(0);
}

/// True where the logistic pattern below takes `op`.
bool takesAvx512Logistic(arith::DivFOp op) {
  return splitsInto16Lanes(op.getType()) && matchLogistic(op);
}

/// AVX-512: 1 / (1 + exp(y)), the logistic function (sigmoid's probability, y = -(s + b)), as
/// 1 / (1 + 2^t) with t = y log2(e) (one FMA for -(s + b): t = s (-log2 e) + b (-log2 e),
/// the second term loop-invariant), the reciprocal r of d = 1 + 2^t from vrcp14ps (relative
/// error < 2^-14) and one Newton step r + r (1 - d' r) (~2^-23) with d' = min(d, FLT_MAX):
/// where d is +inf (t >= 128, y = +inf) r is exactly 0 and so is the result (no inf * 0), so
/// a masked score (s = -inf) gives exactly 0 by itself. At y = -inf it is 1, NaN stays NaN.
/// 1 / (1 + 2^u) is the same with t = u.
struct LogisticAvx512 : OpRewritePattern<arith::DivFOp> {
  LogisticAvx512(MLIRContext *context) : OpRewritePattern(context, /*benefit=*/3) {}

  LogicalResult matchAndRewrite(arith::DivFOp op, PatternRewriter &rewriter) const override {
    bool base2 = false;
    Value y = matchLogistic(op, &base2);
    if (!y)
      return failure();
    Location loc = op.getLoc();
    // 1 / (1 + 2^u) (a folded normalizer's form) takes u as it is. Where u is never +inf,
    // 2^u saturates at the largest float (vscalefps rounding toward zero) instead of the min
    // below: r = vrcp14ps(FLT_MAX) is then 0 or a denormal, and so is p, against a true
    // p < 2^-128.
    bool noPositiveInfinity = base2 && op->hasAttr(kNoPositiveInfinityAttr);
    // y = -z folds into the factor: t = z * -log2(e); z = a + b into one FMA.
    double factor = base2 ? 1.0 : M_LOG2E;
    if (auto negated = y.getDefiningOp<arith::NegFOp>(); negated && !base2) {
      y = negated.getOperand();
      factor = -factor;
    }
    Value addend;
    if (auto sum = y.getDefiningOp<arith::AddFOp>(); sum && !base2) {
      y = sum.getLhs();
      addend = sum.getRhs();
    }
    SmallVector<Value> operands{y};
    if (addend)
      operands.push_back(addend);
    Value result = per16Lanes(rewriter, loc, operands, [&](ValueRange chunk) {
      Avx512 x86{rewriter, loc};
      Constants c{rewriter, loc, x86.v16};
      Value t = base2 ? chunk[0]
                : chunk.size() == 2
                    ? Value(math::FmaOp::create(
                          rewriter, loc, chunk[0], c.f32(factor),
                          arith::MulFOp::create(rewriter, loc, chunk[1], c.f32(factor))))
                    : Value(arith::MulFOp::create(rewriter, loc, chunk[0], c.f32(factor)));
      Value denominator = arith::AddFOp::create(
          rewriter, loc, x86.exp2(t, /*saturate=*/noPositiveInfinity), c.f32(1.0));
      Value estimate = x86.intrinsic("llvm.x86.avx512.rcp14.ps.512",
                                     {denominator, c.f32(0.0), x86.allLanes()});
      // r' = r + r (1 - d' r)
      Value finite = noPositiveInfinity
                         ? denominator
                         : x86.atMost(denominator, double(std::numeric_limits<float>::max()));
      Value residual = math::FmaOp::create(
          rewriter, loc, arith::NegFOp::create(rewriter, loc, finite), estimate, c.f32(1.0));
      return Value(math::FmaOp::create(rewriter, loc, estimate, residual, estimate));
    });
    if (!result)
      return failure();
    rewriter.replaceOp(op, result);
    return success();
  }
};

/// True where `value` is never +inf or NaN: a finite constant (scalar or splat), or -ln(n)
/// for n converted from an integer (sigmoid's default bias, -ln of the key count; a kernel
/// with no keys has no scores to normalize), through broadcasts.
bool neverPositiveInfinityOrNaN(Value value) {
  while (auto broadcast = value.getDefiningOp<vector::BroadcastOp>())
    value = broadcast.getSource();
  FloatAttr scalar;
  if (matchPattern(value, m_Constant(&scalar)))
    return std::isfinite(scalar.getValueAsDouble());
  DenseFPElementsAttr dense;
  if (matchPattern(value, m_Constant(&dense)) && dense.isSplat())
    return dense.getSplatValue<APFloat>().isFinite();
  auto negated = value.getDefiningOp<arith::NegFOp>();
  auto log = negated ? negated.getOperand().getDefiningOp<math::LogOp>() : math::LogOp();
  return log && (log.getOperand().getDefiningOp<arith::SIToFPOp>() ||
                 log.getOperand().getDefiningOp<arith::UIToFPOp>());
}

/// AVX-512: select(s == -inf, 0, logistic(-(s + b))) is the logistic alone where b is never
/// +inf or NaN: at s = -inf, y = +inf and LogisticAvx512 gives exactly 0 (the lowering's
/// masked-score select, a compare and a masked move per 16 scores, goes away).
struct LogisticMaskedSelectAvx512 : OpRewritePattern<arith::SelectOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(arith::SelectOp op, PatternRewriter &rewriter) const override {
    auto compare = op.getCondition().getDefiningOp<arith::CmpFOp>();
    auto logistic = op.getFalseValue().getDefiningOp<arith::DivFOp>();
    if (!compare || compare.getPredicate() != arith::CmpFPredicate::OEQ || !logistic ||
        !takesAvx512Logistic(logistic) || !matchPattern(op.getTrueValue(), m_AnyZeroFloat()))
      return failure();
    DenseFPElementsAttr limit;
    if (!matchPattern(compare.getRhs(), m_Constant(&limit)) || !limit.isSplat() ||
        !limit.getSplatValue<APFloat>().isInfinity() ||
        !limit.getSplatValue<APFloat>().isNegative())
      return failure();
    Value score = compare.getLhs();
    auto negated = matchLogistic(logistic).getDefiningOp<arith::NegFOp>();
    if (!negated)
      return failure();
    Value z = negated.getOperand();
    if (z != score) {
      auto sum = z.getDefiningOp<arith::AddFOp>();
      if (!sum)
        return failure();
      Value bias = sum.getLhs() == score   ? sum.getRhs()
                   : sum.getRhs() == score ? sum.getLhs()
                                           : Value();
      if (!bias || !neverPositiveInfinityOrNaN(bias))
        return failure();
    }
    rewriter.replaceOp(op, logistic.getResult());
    return success();
  }
};

/// exp and tanh through MLIR's polynomials.
void populateMathApproximations(RewritePatternSet &patterns) {
  populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
    return name == "exp" || name == "tanh" || name == math::ExpOp::getOperationName() ||
           name == math::TanhOp::getOperationName();
  });
}

struct AttnCpuFastMathPass : impl::AttnCpuFastMathBase<AttnCpuFastMathPass> {
  using AttnCpuFastMathBase::AttnCpuFastMathBase;
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    // Rewrites of single math ops: no block or region to simplify afterwards, and that
    // simplification walked every kernel again after each round (a third of the pass).
    GreedyRewriteConfig config;
    config.setRegionSimplificationLevel(GreedySimplifyRegionLevel::Disabled);
    if (avx512) {
      // The logistic first, while its math.exp is still whole.
      RewritePatternSet logistic(context);
      logistic.add<LogisticAvx512>(context);
      RewritePatternSet selects(context);
      selects.add<LogisticMaskedSelectAvx512>(context);
      if (failed(applyPatternsGreedily(getOperation(), std::move(selects), config)))
        return signalPassFailure();
      if (failed(applyPatternsGreedily(getOperation(), std::move(logistic), config)))
        return signalPassFailure();
    }
    RewritePatternSet patterns(context);
    patterns.add<Exp2Polynomial>(context, avx512);
    populateMathApproximations(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns), config)))
      signalPassFailure();
  }
};
} // namespace

void populateCpuFastMathPatterns(RewritePatternSet &patterns) {
  patterns.add<Exp2Polynomial>(patterns.getContext(), /*avx512=*/false);
  populateMathApproximations(patterns);
}
} // namespace mlir::attn
