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
// softmax
//===----------------------------------------------------------------------===//

bool SoftmaxAttr::isRowWise() const { return true; }

// Row-wise scores arrive max-shifted in the base-2 log domain (the tiling pass folds log2(e)
// into the scale), so the numerator is a bare exp2.
Value SoftmaxAttr::emitProbability(OpBuilder &builder, Location loc, Value score, Value,
                                   Region &) const {
  return math::Exp2Op::create(builder, loc, score);
}

// dS = p * (dP - rowsum(dO * O)).
FailureOr<Value> SoftmaxAttr::emitScoreGradient(OpBuilder &builder, Location loc, Value,
                                                Value prob, Value gradProb, Value rowTerm,
                                                Value, Region &) const {
  Value centered = arith::SubFOp::create(builder, loc, gradProb, rowTerm);
  return Value(arith::MulFOp::create(builder, loc, prob, centered));
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

bool SigmoidAttr::isRowWise() const { return false; }
Value SigmoidAttr::emitProbability(OpBuilder &builder, Location loc, Value score,
                                   Value keyLength, Region &) const {
  Value bias = parameterOrDefault(builder, loc, getBias(), keyLength, [&]() -> Value {
    Value lnLength = math::LogOp::create(builder, loc, keyLength);
    return arith::NegFOp::create(builder, loc, lnLength);
  });
  Value shifted = arith::AddFOp::create(builder, loc, score, bias);
  Value negated = arith::NegFOp::create(builder, loc, shifted);
  Value expNeg = math::ExpOp::create(builder, loc, negated);
  Value one = f32Constant(builder, loc, 1.0);
  Value denominator = arith::AddFOp::create(builder, loc, one, expNeg);
  return arith::DivFOp::create(builder, loc, one, denominator);
}

// sigmoid(x) = 0.5 tanh(0.5 x) + 0.5: one tanh.approx and two FMAs on GPUs (FlashSigmoid's
// form), instead of exp, add and a division.
Value SigmoidAttr::emitFastProbability(OpBuilder &builder, Location loc, Value score,
                                       Value keyLength, Region &) const {
  Value bias = parameterOrDefault(builder, loc, getBias(), keyLength, [&]() -> Value {
    Value lnLength = math::LogOp::create(builder, loc, keyLength);
    return arith::NegFOp::create(builder, loc, lnLength);
  });
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

bool ReluAttr::isRowWise() const { return false; }
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

bool CustomAttr::isRowWise() const { return false; }
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
