// The NormalizerAttrInterface models: classification and the scalar IR
// each normalizer emits, evaluated by constant folding against the closed-form formula.
#include "dialects/attn/AttnDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {
class NormalizerInterfaceTest : public ::testing::Test {
protected:
  NormalizerInterfaceTest() {
    context.loadDialect<AttnDialect, arith::ArithDialect, math::MathDialect,
                        func::FuncDialect>();
  }

  NormalizerAttrInterface parse(StringRef text) {
    Attribute attr = parseAttribute(text, &context);
    return dyn_cast_or_null<NormalizerAttrInterface>(attr);
  }

  /// Emits the normalizer on constant inputs inside a function, folds it, and returns the
  /// folded constant.
  std::optional<double> evaluate(NormalizerAttrInterface normalizer, double score,
                                 double keyLength, Region *body = nullptr) {
    return evaluateWith(score, keyLength, [&](OpBuilder &builder, Location loc, Value s,
                                              Value length) {
      Region empty;
      return normalizer.emitProbability(builder, loc, s, length, body ? *body : empty);
    });
  }

  /// Emits `emit(score, keyLength)` on constants inside a function, folds it, and returns the
  /// folded constant.
  std::optional<double>
  evaluateWith(double score, double keyLength,
               llvm::function_ref<Value(OpBuilder &, Location, Value, Value)> emit) {
    OpBuilder builder(&context);
    Location loc = builder.getUnknownLoc();
    auto module = ModuleOp::create(loc);
    builder.setInsertionPointToEnd(module.getBody());
    auto f32 = builder.getF32Type();
    auto func = func::FuncOp::create(builder, loc, "eval", builder.getFunctionType({}, {f32}));
    builder.setInsertionPointToEnd(func.addEntryBlock());
    Value s = arith::ConstantOp::create(builder, loc, builder.getF32FloatAttr(score));
    Value length = arith::ConstantOp::create(builder, loc, builder.getF32FloatAttr(keyLength));
    Value p = emit(builder, loc, s, length);
    func::ReturnOp::create(builder, loc, p);
    RewritePatternSet patterns(&context);
    (void)applyPatternsGreedily(module, std::move(patterns));
    auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
    FloatAttr folded;
    std::optional<double> result;
    if (auto constant = ret.getOperand(0).getDefiningOp<arith::ConstantOp>())
      if ((folded = dyn_cast<FloatAttr>(constant.getValue())))
        result = folded.getValueAsDouble();
    module->erase();
    return result;
  }

  MLIRContext context;
};

TEST_F(NormalizerInterfaceTest, ClassifiesRowWiseAndElementwise) {
  EXPECT_TRUE(parse("#attn.softmax").isRowWise());
  EXPECT_TRUE(parse("#attn.softmax1").isRowWise());
  EXPECT_EQ(parse("#attn.softmax1").getRowStateSize(), 2u);
  EXPECT_EQ(parse("#attn.sigmoid").getRowStateSize(), 0u);
  EXPECT_FALSE(parse("#attn.sigmoid").isRowWise());
  EXPECT_FALSE(parse("#attn.relu<scale = 0.5>").isRowWise());
  EXPECT_FALSE(parse("#attn.custom").isRowWise());
  EXPECT_TRUE(parse("#attn.custom").usesBodyRegion());
  EXPECT_FALSE(parse("#attn.sigmoid").usesBodyRegion());
}

TEST_F(NormalizerInterfaceTest, SigmoidEmitsSigmoidOfShiftedScore) {
  for (double s : {-3.0, -0.25, 0.0, 1.5, 4.0}) {
    auto p = evaluate(parse("#attn.sigmoid<bias = -1.0>"), s, 128);
    ASSERT_TRUE(p.has_value());
    EXPECT_NEAR(*p, 1.0 / (1.0 + std::exp(-(s - 1.0))), 1e-6) << "s = " << s;
    // The default bias reads the run-time key length: -ln(128).
    auto q = evaluate(parse("#attn.sigmoid"), s, 128);
    ASSERT_TRUE(q.has_value());
    EXPECT_NEAR(*q, 1.0 / (1.0 + std::exp(-(s - std::log(128.0)))), 1e-6) << "s = " << s;
  }
}

// The folded form: g(a s + c) is the same probability, a and c as a target folds them into
// the queries and the score product's initial value.
TEST_F(NormalizerInterfaceTest, SigmoidFoldedFormIsTheSameProbability) {
  for (const char *text : {"#attn.sigmoid<bias = -1.0>", "#attn.sigmoid"}) {
    NormalizerAttrInterface sigmoid = parse(text);
    std::optional<double> factor = sigmoid.getFoldedScoreFactor();
    ASSERT_TRUE(factor.has_value());
    for (double s : {-30.0, -3.0, -0.25, 0.0, 1.5, 4.0, 30.0}) {
      auto folded = evaluateWith(s, 77, [&](OpBuilder &b, Location loc, Value score,
                                            Value length) {
        Value scaled = arith::MulFOp::create(
            b, loc, score, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(*factor)));
        Value u = arith::AddFOp::create(b, loc, scaled,
                                        sigmoid.emitFoldedScoreOffset(b, loc, length));
        return sigmoid.emitFoldedProbability(b, loc, u);
      });
      auto direct = evaluate(sigmoid, s, 77);
      ASSERT_TRUE(folded.has_value() && direct.has_value()) << text << " s = " << s;
      EXPECT_NEAR(*folded, *direct, 1e-6 * *direct) << text << " s = " << s;
    }
  }
  // Normalizers without one say so: the tilers keep their -inf masks before them.
  EXPECT_FALSE(parse("#attn.softmax").getFoldedScoreFactor().has_value());
  EXPECT_FALSE(parse("#attn.relu").getFoldedScoreFactor().has_value());
  EXPECT_FALSE(parse("#attn.custom").getFoldedScoreFactor().has_value());
}

TEST_F(NormalizerInterfaceTest, ReluEmitsScaledRectifier) {
  for (double s : {-2.0, 0.0, 0.75, 3.0}) {
    auto p = evaluate(parse("#attn.relu<scale = 0.5>"), s, 10);
    ASSERT_TRUE(p.has_value());
    EXPECT_NEAR(*p, std::max(s, 0.0) * 0.5, 1e-7);
    auto q = evaluate(parse("#attn.relu"), s, 10);
    ASSERT_TRUE(q.has_value());
    EXPECT_NEAR(*q, std::max(s, 0.0) / 10, 1e-7);
  }
}

TEST_F(NormalizerInterfaceTest, SoftmaxNumeratorIsExp2OfShiftedScore) {
  auto p = evaluate(parse("#attn.softmax"), -1.5, 16);
  ASSERT_TRUE(p.has_value());
  EXPECT_NEAR(*p, std::exp2(-1.5), 1e-6);
}

TEST_F(NormalizerInterfaceTest, CustomInlinesItsBody) {
  auto module = parseSourceString<ModuleOp>(R"mlir(
    func.func @f(%q: tensor<1x1x4x8xf32>) -> tensor<1x1x4x8xf32> {
      %o = attn.attention %q, %q, %q normalizer(#attn.custom)
          : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
      normalizer_body {
      ^bb0(%s: f32):
        %t = math.tanh %s : f32
        %two = arith.constant 2.0 : f32
        %p = arith.mulf %t, %two : f32
        attn.yield %p : f32
      }
      return %o : tensor<1x1x4x8xf32>
    })mlir", &context);
  ASSERT_TRUE(module);
  AttentionOp op;
  module->walk([&](AttentionOp found) { op = found; });
  ASSERT_TRUE(op);
  auto p = evaluate(op.getNormalizer(), 0.3, 4, &op.getNormalizerBody());
  ASSERT_TRUE(p.has_value());
  EXPECT_NEAR(*p, 2 * std::tanh(0.3), 1e-6);
}
} // namespace
