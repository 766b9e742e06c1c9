// attn op verifiers and helpers. Every diagnostic names the operand and the numbers.
#include "dialects/attn/AttnDialect.h"

#include "llvm/Support/MathExtras.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

#include <cmath>
#include <tuple>

using namespace mlir;
using namespace mlir::attn;

#define GET_OP_CLASSES
#include "dialects/attn/AttnOps.cpp.inc"

namespace {
bool isSupportedFloat(Type type) { return type.isF16() || type.isBF16() || type.isF32() || type.isF64(); }

std::string dimString(int64_t dim) {
  return ShapedType::isDynamic(dim) ? std::string("?") : std::to_string(dim);
}

/// Two dimensions agree unless both are static and differ.
bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

/// `dim` is compatible with `expected` or is a broadcast 1.
bool compatibleOrOne(int64_t dim, int64_t expected) {
  return dim == 1 || compatible(dim, expected);
}

LogicalResult checkRank(Operation *op, StringRef name, RankedTensorType type, int64_t rank,
                        StringRef layout) {
  if (type.getRank() != rank)
    return op->emitOpError() << name << " must have rank " << rank << " " << layout
                             << ", got rank " << type.getRank();
  return success();
}
} // namespace

//===----------------------------------------------------------------------===//
// SplitHeadsOp
//===----------------------------------------------------------------------===//

LogicalResult SplitHeadsOp::verify() {
  auto inputType = getInput().getType();
  int64_t heads = getHeads(), kvHeads = getKvHeads();
  if (heads <= 0 || kvHeads <= 0)
    return emitOpError() << "heads and kv_heads must be positive, got " << heads << " and "
                         << kvHeads;
  if (heads % kvHeads != 0)
    return emitOpError() << "heads " << heads << " must be a multiple of kv_heads " << kvHeads;
  if (failed(checkRank(getOperation(), "input", inputType, 3, "[B, S, (Hq + 2 Hkv) D]")))
    return failure();
  Type element = inputType.getElementType();
  if (failed(checkRank(getOperation(), "query", getQuery().getType(), 4, "[B, Hq, S, D]")))
    return failure();
  int64_t headDim = getQuery().getType().getDimSize(3);
  for (auto [name, type, count] :
       {std::tuple<StringRef, RankedTensorType, int64_t>{"query", getQuery().getType(), heads},
        {"key", getKey().getType(), kvHeads},
        {"value", getValue().getType(), kvHeads}}) {
    if (failed(checkRank(getOperation(), name, type, 4, "[B, H, S, D]")))
      return failure();
    if (type.getElementType() != element)
      return emitOpError() << name << " element type " << type.getElementType()
                           << " differs from input element type " << element;
    if (!compatible(type.getDimSize(0), inputType.getDimSize(0)))
      return emitOpError() << name << " batch " << dimString(type.getDimSize(0))
                           << " differs from input batch " << dimString(inputType.getDimSize(0));
    if (!compatible(type.getDimSize(2), inputType.getDimSize(1)))
      return emitOpError() << name << " length " << dimString(type.getDimSize(2))
                           << " differs from input length " << dimString(inputType.getDimSize(1));
    if (!compatible(type.getDimSize(1), count))
      return emitOpError() << name << " has " << dimString(type.getDimSize(1))
                           << " heads, expected " << count;
    if (ShapedType::isDynamic(type.getDimSize(3)))
      return emitOpError() << name << " head dim must be static, got " << type;
    if (type.getDimSize(3) != headDim)
      return emitOpError() << name << " head dim " << type.getDimSize(3)
                           << " differs from query head dim " << headDim;
  }
  int64_t features = inputType.getDimSize(2);
  // (heads + 2 kv_heads) x head dim, which attributes near INT64_MAX overflow.
  int64_t projected = 0;
  if (llvm::MulOverflow(kvHeads, int64_t(2), projected) ||
      llvm::AddOverflow(projected, heads, projected) ||
      llvm::MulOverflow(projected, headDim, projected))
    return emitOpError() << "(heads " << heads << " + 2 x kv_heads " << kvHeads
                         << ") x head dim " << headDim << " overflows 64 bits";
  if (!compatible(features, projected))
    return emitOpError() << "input has " << dimString(features) << " features, expected (heads "
                         << heads << " + 2 x kv_heads " << kvHeads << ") x head dim " << headDim
                         << " = " << projected;
  return success();
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

int64_t AttentionOp::getHeadDim() { return getQuery().getType().getDimSize(3); }
int64_t AttentionOp::getValueHeadDim() { return getValue().getType().getDimSize(3); }

float AttentionOp::getEffectiveScale() {
  if (auto scale = getScaleAttr())
    return scale.getValueAsDouble();
  return 1.0f / std::sqrt(static_cast<float>(getHeadDim()));
}

LogicalResult AttentionOp::verify() {
  auto qType = getQuery().getType();
  auto kType = getKey().getType();
  auto vType = getValue().getType();
  auto resultType = getResult().getType();
  Operation *op = getOperation();

  if (failed(checkRank(op, "query", qType, 4, "[B, Hq, Sq, D]")) ||
      failed(checkRank(op, "key", kType, 4, "[B, Hkv, Sk, D]")) ||
      failed(checkRank(op, "value", vType, 4, "[B, Hkv, Sk, Dv]")) ||
      failed(checkRank(op, "result", resultType, 4, "[B, Hq, Sq, Dv]")))
    return failure();

  Type elementType = qType.getElementType();
  if (!isSupportedFloat(elementType))
    return emitOpError() << "query element type must be f16, bf16, f32 or f64, got "
                         << elementType;
  if (kType.getElementType() != elementType)
    return emitOpError() << "key element type " << kType.getElementType()
                         << " differs from query element type " << elementType;
  if (vType.getElementType() != elementType)
    return emitOpError() << "value element type " << vType.getElementType()
                         << " differs from query element type " << elementType;
  if (resultType.getElementType() != elementType)
    return emitOpError() << "result element type " << resultType.getElementType()
                         << " differs from query element type " << elementType;

  int64_t headDim = qType.getDimSize(3);
  if (ShapedType::isDynamic(headDim) || ShapedType::isDynamic(kType.getDimSize(3)) ||
      ShapedType::isDynamic(vType.getDimSize(3)))
    return emitOpError() << "head dims of query, key and value must be static, got "
                         << dimString(headDim) << ", " << dimString(kType.getDimSize(3))
                         << ", " << dimString(vType.getDimSize(3));
  if (kType.getDimSize(3) != headDim)
    return emitOpError() << "key head dim " << kType.getDimSize(3)
                         << " differs from query head dim " << headDim;

  int64_t batch = qType.getDimSize(0);
  if (!compatible(kType.getDimSize(0), batch) || !compatible(vType.getDimSize(0), batch))
    return emitOpError() << "batch sizes differ: query " << dimString(batch) << ", key "
                         << dimString(kType.getDimSize(0)) << ", value "
                         << dimString(vType.getDimSize(0));

  int64_t queryHeads = qType.getDimSize(1), kvHeads = kType.getDimSize(1);
  if (!compatible(vType.getDimSize(1), kvHeads))
    return emitOpError() << "value has " << dimString(vType.getDimSize(1))
                         << " heads but key has " << dimString(kvHeads);
  if (!ShapedType::isDynamic(queryHeads) && !ShapedType::isDynamic(kvHeads) &&
      (kvHeads == 0 || queryHeads % kvHeads != 0))
    return emitOpError() << "query heads (" << queryHeads
                         << ") must be a multiple of key/value heads (" << kvHeads << ")";
  if (!compatible(vType.getDimSize(2), kType.getDimSize(2)))
    return emitOpError() << "value sequence length " << dimString(vType.getDimSize(2))
                         << " differs from key sequence length "
                         << dimString(kType.getDimSize(2));

  int64_t queryLength = qType.getDimSize(2), keyLength = kType.getDimSize(2);
  SmallVector<int64_t> expected = {batch, queryHeads, queryLength, vType.getDimSize(3)};
  for (auto [index, dim] : llvm::enumerate(resultType.getShape()))
    if (!compatible(dim, expected[index]))
      return emitOpError() << "result dim " << index << " is " << dimString(dim)
                           << " but [B, Hq, Sq, Dv] gives " << dimString(expected[index]);

  if (auto scale = getScaleAttr()) {
    double value = scale.getValueAsDouble();
    if (!(value > 0) || !std::isfinite(value))
      return emitOpError() << "scale must be positive and finite, got " << value;
  }
  if (auto window = getWindowAttr(); window && window.getInt() < 0)
    return emitOpError() << "window must be >= 0, got " << window.getInt();

  if (Value bias = getBias()) {
    auto biasType = cast<RankedTensorType>(bias.getType());
    if (failed(checkRank(op, "bias", biasType, 4, "[B|1, Hq|1, Sq, Sk]")))
      return failure();
    if (!isSupportedFloat(biasType.getElementType()))
      return emitOpError() << "bias element type must be a float, got "
                           << biasType.getElementType();
    SmallVector<int64_t> biasExpected = {batch, queryHeads, queryLength, keyLength};
    for (int64_t index = 0; index < 4; ++index) {
      int64_t dim = biasType.getDimSize(index);
      bool ok = index < 2 ? compatibleOrOne(dim, biasExpected[index])
                          : compatible(dim, biasExpected[index]);
      if (!ok)
        return emitOpError() << "bias dim " << index << " is " << dimString(dim)
                             << " but [B|1, Hq|1, Sq, Sk] gives "
                             << dimString(biasExpected[index]);
    }
  }

  for (auto [position, capture] : llvm::enumerate(getCaptures())) {
    Type element = cast<RankedTensorType>(capture.getType()).getElementType();
    if (!element.isF32() && !element.isSignlessInteger(32) && !element.isSignlessInteger(64))
      return emitOpError() << "capture " << position << " element type must be f32, i32 or i64, got "
                           << element;
  }

  if (Value lengths = getKvLengths()) {
    auto lengthsType = cast<RankedTensorType>(lengths.getType());
    if (lengthsType.getRank() != 1)
      return emitOpError() << "kv_lengths must have rank 1 [B], got rank "
                           << lengthsType.getRank();
    if (!lengthsType.getElementType().isSignlessInteger() &&
        !lengthsType.getElementType().isIndex())
      return emitOpError() << "kv_lengths element type must be a signless integer or index, got "
                           << lengthsType.getElementType();
    if (!compatible(lengthsType.getDimSize(0), batch))
      return emitOpError() << "kv_lengths has " << dimString(lengthsType.getDimSize(0))
                           << " entries but the batch is " << dimString(batch);
  }
  return success();
}

SmallVector<Type> AttentionOp::getRegionArgumentTypes(bool withScore) {
  Builder builder(getContext());
  SmallVector<Type> types;
  if (withScore)
    types.push_back(builder.getF32Type());
  types.append(4, builder.getIndexType());
  for (Value capture : getCaptures())
    types.push_back(capture.getType());
  return types;
}

LogicalResult AttentionOp::verifyRegions() {
  MLIRContext *context = getContext();
  auto f32 = Float32Type::get(context);
  bool wantsBody = getNormalizer().usesBodyRegion();
  bool hasBody = !getNormalizerBody().empty();
  if (wantsBody && !hasBody)
    return emitOpError() << "normalizer " << getNormalizer()
                         << " needs a normalizer_body region";
  if (!wantsBody && hasBody)
    return emitOpError() << "normalizer_body is only allowed with #attn.custom, got "
                         << getNormalizer();
  if (hasBody &&
      failed(verifyScalarRegion(getOperation(), getNormalizerBody(), "normalizer_body", {f32})))
    return failure();
  if (!getScoreMod().empty() &&
      failed(verifyScalarRegion(getOperation(), getScoreMod(), "score_mod",
                                getRegionArgumentTypes(/*withScore=*/true))))
    return failure();
  if (!getMask().empty() &&
      failed(verifyScalarRegion(getOperation(), getMask(), "mask",
                                getRegionArgumentTypes(/*withScore=*/false),
                                IntegerType::get(context, 1))))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// ReparamLinearOp
//===----------------------------------------------------------------------===//

LogicalResult ReparamLinearOp::verify() {
  auto inputType = getInput().getType();
  auto weightType = getWeight().getType();
  auto gammaType = getGamma().getType();
  auto uType = getU().getType();
  auto resultType = getResult().getType();
  Type elementType = inputType.getElementType();

  if (!isSupportedFloat(elementType))
    return emitOpError() << "input element type must be f16, bf16, f32 or f64, got "
                         << elementType;
  if (inputType.getRank() < 1)
    return emitOpError() << "input must have rank >= 1 [..., In], got rank 0";
  if (failed(checkRank(getOperation(), "weight", weightType, 2, "[Out, In]")))
    return failure();
  for (auto [name, type] : {std::pair<StringRef, Type>{"weight", weightType.getElementType()},
                            {"gamma", gammaType.getElementType()},
                            {"u", uType.getElementType()},
                            {"result", resultType.getElementType()}})
    if (type != elementType)
      return emitOpError() << name << " element type " << type
                           << " differs from input element type " << elementType;

  int64_t outFeatures = weightType.getDimSize(0), inFeatures = weightType.getDimSize(1);
  int64_t inputFeatures = inputType.getDimSize(inputType.getRank() - 1);
  if (!compatible(inputFeatures, inFeatures))
    return emitOpError() << "input has " << dimString(inputFeatures)
                         << " features but weight [Out, In] expects "
                         << dimString(inFeatures);
  if (failed(checkRank(getOperation(), "u", uType, 1, "[In]")))
    return failure();
  if (!compatible(uType.getDimSize(0), inFeatures))
    return emitOpError() << "u has " << dimString(uType.getDimSize(0))
                         << " entries but weight has " << dimString(inFeatures)
                         << " input features";
  if (uType != getUpdatedU().getType())
    return emitOpError() << "updated_u type " << getUpdatedU().getType()
                         << " differs from u type " << uType;
  bool scalarGamma = gammaType.getRank() == 0 ||
                     (gammaType.getRank() == 1 && gammaType.getDimSize(0) == 1);
  if (!scalarGamma)
    return emitOpError() << "gamma must be a scalar (tensor<T> or tensor<1xT>), got "
                         << gammaType;
  if (Value bias = getBias()) {
    auto biasType = cast<RankedTensorType>(bias.getType());
    if (biasType.getRank() != 1 || !compatible(biasType.getDimSize(0), outFeatures))
      return emitOpError() << "bias must be [Out] = [" << dimString(outFeatures)
                           << "], got " << biasType;
    if (biasType.getElementType() != elementType)
      return emitOpError() << "bias element type " << biasType.getElementType()
                           << " differs from input element type " << elementType;
  }
  if (resultType.getRank() != inputType.getRank())
    return emitOpError() << "result must have the input's rank " << inputType.getRank()
                         << ", got rank " << resultType.getRank();
  for (int64_t dim = 0; dim + 1 < inputType.getRank(); ++dim)
    if (!compatible(resultType.getDimSize(dim), inputType.getDimSize(dim)))
      return emitOpError() << "result dim " << dim << " is "
                           << dimString(resultType.getDimSize(dim)) << " but input dim is "
                           << dimString(inputType.getDimSize(dim));
  int64_t resultFeatures = resultType.getDimSize(resultType.getRank() - 1);
  if (!compatible(resultFeatures, outFeatures))
    return emitOpError() << "result has " << dimString(resultFeatures)
                         << " features but weight has " << dimString(outFeatures)
                         << " output features";
  return success();
}
