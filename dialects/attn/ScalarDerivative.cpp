// Forward-mode symbolic differentiation of scalar arith/math regions (custom normalizers and
// score_mod), used by the backward pass.
#include "dialects/attn/AttnDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;

namespace {
class Differentiator {
public:
  Differentiator(OpBuilder &builder, Location loc) : b(builder), loc(loc) {}

  /// d(result)/dx for `op` given the primal operands/result and the operand derivatives
  /// (null = zero). Returns null when the derivative is identically zero; failure when the
  /// op has no rule.
  FailureOr<Value> rule(Operation *op, ArrayRef<Value> x, ArrayRef<Value> dx, Value y) {
    auto any = [&] { return llvm::any_of(dx, [](Value v) { return bool(v); }); };
    if (!any())
      return Value();
    return llvm::TypeSwitch<Operation *, FailureOr<Value>>(op)
        .Case([&](arith::AddFOp) { return add(dx[0], dx[1]); })
        .Case([&](arith::SubFOp) { return add(dx[0], neg(dx[1])); })
        .Case([&](arith::NegFOp) { return neg(dx[0]); })
        .Case([&](arith::MulFOp) { return add(mul(dx[0], x[1]), mul(x[0], dx[1])); })
        .Case([&](arith::DivFOp) {
          // (a/b)' = a'/b - a b' / b^2 = (a' - y b') / b
          return div(add(dx[0], neg(mul(y, dx[1]))), x[1]);
        })
        .Case<arith::MaximumFOp, arith::MaxNumFOp>([&](Operation *) {
          return pick(arith::CmpFPredicate::OGE, x[0], x[1], dx[0], dx[1]);
        })
        .Case<arith::MinimumFOp, arith::MinNumFOp>([&](Operation *) {
          return pick(arith::CmpFPredicate::OLE, x[0], x[1], dx[0], dx[1]);
        })
        .Case([&](arith::SelectOp) -> FailureOr<Value> {
          if (dx[0])
            return failure();
          return select(x[0], dx[1], dx[2]);
        })
        .Case<arith::ExtFOp, arith::TruncFOp>([&](Operation *) { return dx[0]; })
        .Case([&](math::ExpOp) { return mul(y, dx[0]); })
        .Case([&](math::Exp2Op) { return mul(mul(y, constant(std::log(2.0))), dx[0]); })
        .Case([&](math::ExpM1Op) { return mul(add(y, constant(1.0)), dx[0]); })
        .Case([&](math::LogOp) { return div(dx[0], x[0]); })
        .Case([&](math::Log2Op) { return div(dx[0], mul(x[0], constant(std::log(2.0)))); })
        .Case([&](math::Log1pOp) { return div(dx[0], add(x[0], constant(1.0))); })
        .Case([&](math::TanhOp) {
          return mul(add(constant(1.0), neg(mul(y, y))), dx[0]);
        })
        .Case([&](math::SqrtOp) { return div(dx[0], mul(constant(2.0), y)); })
        .Case([&](math::RsqrtOp) { return mul(mul(constant(-0.5), mul(y, mul(y, y))), dx[0]); })
        .Case([&](math::AbsFOp) {
          return pick(arith::CmpFPredicate::OGE, x[0], constant(0.0), dx[0], neg(dx[0]));
        })
        .Case([&](math::SinOp) { return mul(math::CosOp::create(b, loc, x[0]), dx[0]); })
        .Case([&](math::CosOp) { return neg(mul(math::SinOp::create(b, loc, x[0]), dx[0])); })
        .Case([&](math::ErfOp) {
          Value gauss = math::ExpOp::create(b, loc, neg(mul(x[0], x[0])));
          return mul(mul(constant(2.0 / std::sqrt(M_PI)), gauss), dx[0]);
        })
        .Case([&](math::FmaOp) {
          return add(add(mul(dx[0], x[1]), mul(x[0], dx[1])), dx[2]);
        })
        .Case([&](math::PowFOp) -> FailureOr<Value> {
          // d(a^c) = c a^(c-1) da for an exponent that does not depend on the score.
          if (dx[1])
            return failure();
          Value lowered = math::PowFOp::create(b, loc, x[0], add(x[1], constant(-1.0)));
          return mul(mul(x[1], lowered), dx[0]);
        })
        .Default([](Operation *) { return failure(); });
  }

private:
  Value constant(double value) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
  }
  // Null-aware helpers: a null Value is a zero derivative.
  Value add(Value l, Value r) {
    if (!l)
      return r;
    if (!r)
      return l;
    return arith::AddFOp::create(b, loc, l, r);
  }
  Value neg(Value v) { return v ? Value(arith::NegFOp::create(b, loc, v)) : Value(); }
  Value mul(Value l, Value r) {
    if (!l || !r)
      return Value();
    return arith::MulFOp::create(b, loc, l, r);
  }
  Value div(Value l, Value r) { return l ? Value(arith::DivFOp::create(b, loc, l, r)) : l; }
  Value zeroIfNull(Value v) { return v ? v : constant(0.0); }
  Value select(Value condition, Value l, Value r) {
    if (!l && !r)
      return Value();
    return arith::SelectOp::create(b, loc, condition, zeroIfNull(l), zeroIfNull(r));
  }
  Value pick(arith::CmpFPredicate predicate, Value a, Value c, Value da, Value dc) {
    Value condition = arith::CmpFOp::create(b, loc, predicate, a, c);
    return select(condition, da, dc);
  }

  OpBuilder &b;
  Location loc;
};
} // namespace

FailureOr<SmallVector<Value>> mlir::attn::emitRegionWithTangents(OpBuilder &builder,
                                                                Location loc, Region &region,
                                                                ValueRange arguments,
                                                                ArrayRef<Value> seeds) {
  Block &block = region.front();
  IRMapping primal;
  // One tangent channel per seed: original value -> derivative w.r.t. that seed.
  SmallVector<DenseMap<Value, Value>> tangents(seeds.size());
  for (auto [argument, value] : llvm::zip(block.getArguments(), arguments))
    primal.map(argument, value);
  auto one = [&] {
    return arith::ConstantOp::create(builder, loc, builder.getF32FloatAttr(1.0)).getResult();
  };
  for (auto [channel, seed] : llvm::enumerate(seeds))
    if (isa<BlockArgument>(seed))
      tangents[channel][seed] = one();

  Differentiator differentiator(builder, loc);
  for (Operation &op : block.without_terminator()) {
    Operation *clone = builder.clone(op, primal);
    SmallVector<Value> operands;
    for (Value operand : op.getOperands())
      operands.push_back(primal.lookup(operand));
    for (auto [channel, seed] : llvm::enumerate(seeds)) {
      DenseMap<Value, Value> &tangent = tangents[channel];
      // A seed that an op produces (a captured tensor's element) starts its channel.
      if (op.getNumResults() == 1 && op.getResult(0) == seed) {
        tangent[seed] = one();
        continue;
      }
      // Comparisons and integer/index arithmetic are piecewise constant in the seed.
      if (op.getNumResults() != 1 || !isa<FloatType>(op.getResult(0).getType()))
        continue;
      SmallVector<Value> operandTangents;
      for (Value operand : op.getOperands())
        operandTangents.push_back(tangent.lookup(operand));
      FailureOr<Value> derivative =
          differentiator.rule(&op, operands, operandTangents, clone->getResult(0));
      if (failed(derivative))
        return emitError(loc) << "cannot differentiate '" << op.getName()
                              << "' in a normalizer or score_mod region; supported: arith "
                                 "add/sub/mul/div/neg/max/min/select, math "
                                 "exp/exp2/expm1/log/log2/log1p/tanh/sqrt/rsqrt/abs/sin/cos/"
                                 "erf/fma/powf";
      if (*derivative)
        tangent[op.getResult(0)] = *derivative;
    }
  }
  Value yielded = block.getTerminator()->getOperand(0);
  SmallVector<Value> results = {primal.lookup(yielded)};
  for (DenseMap<Value, Value> &tangent : tangents) {
    Value derivative = tangent.lookup(yielded);
    if (!derivative)
      derivative = arith::ConstantOp::create(builder, loc, builder.getF32FloatAttr(0.0));
    results.push_back(derivative);
  }
  return results;
}

FailureOr<std::pair<Value, Value>>
mlir::attn::emitRegionWithDerivative(OpBuilder &builder, Location loc, Region &region,
                                     ValueRange arguments) {
  Value score = region.front().getArgument(0);
  auto results = emitRegionWithTangents(builder, loc, region, arguments, ArrayRef<Value>(score));
  if (failed(results))
    return failure();
  return std::make_pair((*results)[0], (*results)[1]);
}
