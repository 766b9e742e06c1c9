// Normalizer attributes: assembly, verification and their NormalizerAttrInterface models.
#include "dialects/attn/AttnDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/IRMapping.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {
/// Parses `<name = float>` if present; leaves `result` null when the angle brackets are absent.
ParseResult parseOptionalFloatParameter(AsmParser &parser, StringRef name,
                                        FloatAttr &result) {
  if (failed(parser.parseOptionalLess()))
    return success();
  // Any number: an integer literal (`bias = -2`) is as good as a float one.
  Attribute number;
  std::string key;
  SMLoc keyLoc = parser.getCurrentLocation();
  if (parser.parseKeywordOrString(&key))
    return failure();
  if (key != name)
    return parser.emitError(keyLoc) << "no parameter '" << key << "'; the parameter is '"
                                    << name << "'";
  if (parser.parseEqual())
    return failure();
  SMLoc numberLoc = parser.getCurrentLocation();
  if (parser.parseAttribute(number))
    return failure();
  double value = 0;
  if (auto floatAttr = dyn_cast<FloatAttr>(number))
    value = floatAttr.getValueAsDouble();
  else if (auto integerAttr = dyn_cast<IntegerAttr>(number))
    value = static_cast<double>(integerAttr.getValue().getSExtValue());
  else
    return parser.emitError(numberLoc) << "expected a number for '" << name << "', got "
                                       << number;
  if (parser.parseGreater())
    return failure();
  result = FloatAttr::get(Float64Type::get(parser.getContext()), value);
  return success();
}

void printOptionalFloatParameter(AsmPrinter &printer, StringRef name, FloatAttr value) {
  if (!value)
    return;
  printer << "<" << name << " = ";
  printer.printFloat(value.getValue());
  printer << ">";
}

Value f32Constant(OpBuilder &builder, Location loc, double value) {
  return arith::ConstantOp::create(builder, loc, builder.getF32FloatAttr(value));
}

/// The value of an optional parameter, or `fallback(keyLength)` emitted as IR.
Value parameterOrDefault(OpBuilder &builder, Location loc, FloatAttr parameter,
                         Value keyLength, function_ref<Value()> fallback) {
  if (parameter)
    return f32Constant(builder, loc, parameter.getValueAsDouble());
  assert(keyLength && "unresolved default needs the run-time key length");
  return fallback();
}
} // namespace

//===----------------------------------------------------------------------===//
// softmax (and softmax1, which differs only in its initial row state)
//===----------------------------------------------------------------------===//

namespace {
// The online softmax in the base-2 domain (scores arrive times log2(e)). Row state: the running
// max m and the running sum l of exp2(s - m).
SmallVector<Value> onlineSoftmaxShift(OpBuilder &builder, Location loc, ValueRange state,
                                      Value blockMax) {
  Value oldMax = state[0];
  Value newMax = arith::MaximumFOp::create(builder, loc, oldMax, blockMax);
  // While every score seen is -inf the shift is 0, so exp2(s - shift) and the correction
  // exp2(old - shift) are 0, not NaN, and an all-masked block leaves the row as it was.
  Value none = arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OEQ, newMax,
                                     f32Constant(builder, loc, -INFINITY));
  Value shift = arith::SelectOp::create(builder, loc, none, f32Constant(builder, loc, 0.0),
                                        newMax);
  Value correction =
      math::Exp2Op::create(builder, loc, arith::SubFOp::create(builder, loc, oldMax, shift));
  return {newMax, state[1], shift, correction};
}

SmallVector<Value> onlineSoftmaxAccumulate(OpBuilder &builder, Location loc, ValueRange state,
                                           Value correction, Value blockSum) {
  Value rescaled = arith::MulFOp::create(builder, loc, state[1], correction);
  return {state[0], arith::AddFOp::create(builder, loc, rescaled, blockSum)};
}

std::pair<Value, Value> onlineSoftmaxFinalize(OpBuilder &builder, Location loc,
                                              ValueRange state) {
  Value sum = state[1];
  Value positive = arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OGT, sum,
                                         f32Constant(builder, loc, 0.0));
  Value inverse = arith::DivFOp::create(builder, loc, f32Constant(builder, loc, 1.0), sum);
  Value factor = arith::SelectOp::create(builder, loc, positive, inverse,
                                         f32Constant(builder, loc, 0.0));
  Value logSum = arith::AddFOp::create(builder, loc, state[0],
                                       math::Log2Op::create(builder, loc, sum));
  Value lse = arith::SelectOp::create(builder, loc, positive, logSum,
                                      f32Constant(builder, loc, -INFINITY));
  return {factor, lse};
}

// dS = p * (dP - rowsum(dO * O)).
Value softmaxScoreGradient(OpBuilder &builder, Location loc, Value prob, Value gradProb,
                           Value rowTerm) {
  Value centered = arith::SubFOp::create(builder, loc, gradProb, rowTerm);
  return arith::MulFOp::create(builder, loc, prob, centered);
}
} // namespace

unsigned SoftmaxAttr::getRowStateSize() const { return 2; }
double SoftmaxAttr::getScoreMultiplier() const { return M_LOG2E; }

SmallVector<Value> SoftmaxAttr::emitRowStateInit(OpBuilder &builder, Location loc) const {
  return {f32Constant(builder, loc, -INFINITY), f32Constant(builder, loc, 0.0)};
}

SmallVector<Value> SoftmaxAttr::emitRowShift(OpBuilder &builder, Location loc, ValueRange state,
                                             Value blockMax) const {
  return onlineSoftmaxShift(builder, loc, state, blockMax);
}

SmallVector<Value> SoftmaxAttr::emitRowAccumulate(OpBuilder &builder, Location loc,
                                                  ValueRange state, Value correction,
                                                  Value blockSum) const {
  return onlineSoftmaxAccumulate(builder, loc, state, correction, blockSum);
}

std::pair<Value, Value> SoftmaxAttr::emitRowFinalize(OpBuilder &builder, Location loc,
                                                     ValueRange state) const {
  return onlineSoftmaxFinalize(builder, loc, state);
}

// Scores arrive shifted by the row's max, so the numerator is a bare exp2.
Value SoftmaxAttr::emitProbability(OpBuilder &builder, Location loc, Value score, Value,
                                   Region &) const {
  return math::Exp2Op::create(builder, loc, score);
}

Value SoftmaxAttr::emitBackwardProbability(OpBuilder &builder, Location loc, Value score,
                                           Value lse, Value, Region &, bool) const {
  return math::Exp2Op::create(builder, loc, arith::SubFOp::create(builder, loc, score, lse));
}

FailureOr<Value> SoftmaxAttr::emitScoreGradient(OpBuilder &builder, Location loc, Value,
                                                Value prob, Value gradProb, Value rowTerm,
                                                Value, Region &) const {
  return softmaxScoreGradient(builder, loc, prob, gradProb, rowTerm);
}

// softmax1: the online softmax started from a virtual score 0 (max 0, sum exp(0 - 0) = 1),
// which adds exp(-max) to every row's denominator; everything after the start is softmax's.
unsigned Softmax1Attr::getRowStateSize() const { return 2; }
double Softmax1Attr::getScoreMultiplier() const { return M_LOG2E; }

SmallVector<Value> Softmax1Attr::emitRowStateInit(OpBuilder &builder, Location loc) const {
  return {f32Constant(builder, loc, 0.0), f32Constant(builder, loc, 1.0)};
}

SmallVector<Value> Softmax1Attr::emitRowShift(OpBuilder &builder, Location loc,
                                              ValueRange state, Value blockMax) const {
  return onlineSoftmaxShift(builder, loc, state, blockMax);
}

SmallVector<Value> Softmax1Attr::emitRowAccumulate(OpBuilder &builder, Location loc,
                                                   ValueRange state, Value correction,
                                                   Value blockSum) const {
  return onlineSoftmaxAccumulate(builder, loc, state, correction, blockSum);
}

std::pair<Value, Value> Softmax1Attr::emitRowFinalize(OpBuilder &builder, Location loc,
                                                      ValueRange state) const {
  return onlineSoftmaxFinalize(builder, loc, state);
}

Value Softmax1Attr::emitProbability(OpBuilder &builder, Location loc, Value score, Value,
                                    Region &) const {
  return math::Exp2Op::create(builder, loc, score);
}

Value Softmax1Attr::emitBackwardProbability(OpBuilder &builder, Location loc, Value score,
                                            Value lse, Value, Region &, bool) const {
  return math::Exp2Op::create(builder, loc, arith::SubFOp::create(builder, loc, score, lse));
}

// The constant 1 in the denominator has no gradient: dS = p (dP - rowsum(dO * O)) as softmax.
FailureOr<Value> Softmax1Attr::emitScoreGradient(OpBuilder &builder, Location loc, Value,
                                                 Value prob, Value gradProb, Value rowTerm,
                                                 Value, Region &) const {
  return softmaxScoreGradient(builder, loc, prob, gradProb, rowTerm);
}

//===----------------------------------------------------------------------===//
// sigmoid
//===----------------------------------------------------------------------===//

Attribute SigmoidAttr::parse(AsmParser &parser, Type) {
  FloatAttr bias;
  if (parseOptionalFloatParameter(parser, "bias", bias))
    return {};
  return SigmoidAttr::getChecked([&] { return parser.emitError(parser.getNameLoc()); },
                                 parser.getContext(), bias);
}

void SigmoidAttr::print(AsmPrinter &printer) const {
  printOptionalFloatParameter(printer, "bias", getBias());
}

LogicalResult SigmoidAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  FloatAttr bias) {
  if (bias && !std::isfinite(bias.getValueAsDouble()))
    return emitError() << "sigmoid bias must be finite, got " << bias.getValueAsDouble();
  return success();
}

namespace {
/// Sigmoid's bias: the parameter, or -ln(Sk) from the run-time key length.
Value sigmoidBias(OpBuilder &builder, Location loc, FloatAttr bias, Value keyLength) {
  return parameterOrDefault(builder, loc, bias, keyLength, [&]() -> Value {
    Value lnLength = math::LogOp::create(builder, loc, keyLength);
    return arith::NegFOp::create(builder, loc, lnLength);
  });
}
} // namespace

Value SigmoidAttr::emitProbability(OpBuilder &builder, Location loc, Value score,
                                   Value keyLength, Region &) const {
  Value bias = sigmoidBias(builder, loc, getBias(), keyLength);
  Value shifted = arith::AddFOp::create(builder, loc, score, bias);
  Value negated = arith::NegFOp::create(builder, loc, shifted);
  Value expNeg = math::ExpOp::create(builder, loc, negated);
  Value one = f32Constant(builder, loc, 1.0);
  Value denominator = arith::AddFOp::create(builder, loc, one, expNeg);
  return arith::DivFOp::create(builder, loc, one, denominator);
}

// sigmoid(s + b) = 1 / (1 + 2^u) with u = -log2(e) s - log2(e) b: with -log2(e) folded into
// the queries and -log2(e) b into the score product's initial value, the exponent costs no
// operation per score.
std::optional<double> SigmoidAttr::getFoldedScoreFactor() const { return -M_LOG2E; }

Value SigmoidAttr::emitFoldedScoreOffset(OpBuilder &builder, Location loc,
                                         Value keyLength) const {
  Value bias = sigmoidBias(builder, loc, getBias(), keyLength);
  return arith::MulFOp::create(builder, loc, bias, f32Constant(builder, loc, -M_LOG2E));
}

Value SigmoidAttr::emitFoldedProbability(OpBuilder &builder, Location loc, Value folded) const {
  Value one = f32Constant(builder, loc, 1.0);
  Value power = math::Exp2Op::create(builder, loc, folded);
  return arith::DivFOp::create(builder, loc, one,
                               arith::AddFOp::create(builder, loc, one, power));
}

// sigmoid(x) = 0.5 tanh(0.5 x) + 0.5: one tanh.approx and two FMAs on GPUs (FlashSigmoid's
// form), instead of exp, add and a division.
Value SigmoidAttr::emitFastProbability(OpBuilder &builder, Location loc, Value score,
                                       Value keyLength, Region &) const {
  Value bias = sigmoidBias(builder, loc, getBias(), keyLength);
  Value half = f32Constant(builder, loc, 0.5);
  // 0.5 (s + b) as s * 0.5 + 0.5 b: one fma per score once 0.5 b folds or is hoisted.
  Value halfShifted = arith::AddFOp::create(
      builder, loc, arith::MulFOp::create(builder, loc, score, half),
      arith::MulFOp::create(builder, loc, bias, half));
  Value tanh = math::TanhOp::create(builder, loc, halfShifted);
  // mulf + addf rather than math.fma: the backends contract it, and GPU lowerings would
  // otherwise call libdevice's __nv_fmaf.
  return arith::AddFOp::create(builder, loc, arith::MulFOp::create(builder, loc, tanh, half),
                               half);
}

// dS = p (1 - p) dP: no row statistics, unlike softmax.
FailureOr<Value> SigmoidAttr::emitScoreGradient(OpBuilder &builder, Location loc, Value,
                                                Value prob, Value gradProb, Value, Value,
                                                Region &) const {
  Value one = f32Constant(builder, loc, 1.0);
  Value complement = arith::SubFOp::create(builder, loc, one, prob);
  Value slope = arith::MulFOp::create(builder, loc, prob, complement);
  return Value(arith::MulFOp::create(builder, loc, slope, gradProb));
}

//===----------------------------------------------------------------------===//
// relu
//===----------------------------------------------------------------------===//

Attribute ReluAttr::parse(AsmParser &parser, Type) {
  FloatAttr scale;
  if (parseOptionalFloatParameter(parser, "scale", scale))
    return {};
  return ReluAttr::getChecked([&] { return parser.emitError(parser.getNameLoc()); },
                              parser.getContext(), scale);
}

void ReluAttr::print(AsmPrinter &printer) const {
  printOptionalFloatParameter(printer, "scale", getScale());
}

LogicalResult ReluAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               FloatAttr scale) {
  if (scale && !(scale.getValueAsDouble() > 0 && std::isfinite(scale.getValueAsDouble())))
    return emitError() << "relu scale must be positive and finite, got "
                       << scale.getValueAsDouble();
  return success();
}

Value ReluAttr::emitProbability(OpBuilder &builder, Location loc, Value score,
                                Value keyLength, Region &) const {
  Value scale = parameterOrDefault(builder, loc, getScale(), keyLength, [&]() -> Value {
    return arith::DivFOp::create(builder, loc, f32Constant(builder, loc, 1.0), keyLength);
  });
  Value zero = f32Constant(builder, loc, 0.0);
  Value positive = arith::MaximumFOp::create(builder, loc, score, zero);
  return arith::MulFOp::create(builder, loc, positive, scale);
}

// dS = scale * [s > 0] * dP.
FailureOr<Value> ReluAttr::emitScoreGradient(OpBuilder &builder, Location loc, Value score,
                                             Value, Value gradProb, Value, Value keyLength,
                                             Region &) const {
  Value scale = parameterOrDefault(builder, loc, getScale(), keyLength, [&]() -> Value {
    return arith::DivFOp::create(builder, loc, f32Constant(builder, loc, 1.0), keyLength);
  });
  Value zero = f32Constant(builder, loc, 0.0);
  Value positive =
      arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OGT, score, zero);
  Value slope = arith::SelectOp::create(builder, loc, positive, scale, zero);
  return Value(arith::MulFOp::create(builder, loc, slope, gradProb));
}

//===----------------------------------------------------------------------===//
// custom
//===----------------------------------------------------------------------===//

bool CustomAttr::usesBodyRegion() const { return true; }

// Inlines the normalizer_body region with its argument bound to `score`.
Value CustomAttr::emitProbability(OpBuilder &builder, Location, Value score, Value,
                                  Region &body) const {
  return inlineScalarRegion(builder, body, {score});
}

// dS = f'(s) dP with f' derived symbolically from the body.
FailureOr<Value> CustomAttr::emitScoreGradient(OpBuilder &builder, Location loc, Value score,
                                               Value, Value gradProb, Value, Value,
                                               Region &body) const {
  auto primalAndDerivative = emitRegionWithDerivative(builder, loc, body, {score});
  if (failed(primalAndDerivative))
    return failure();
  return Value(arith::MulFOp::create(builder, loc, primalAndDerivative->second, gradProb));
}
