#include "runtime/VariantSource.h"

#include "dialects/attn/AttnDialect.h"
#include "dialects/attn/NormalizerShorthand.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

using namespace mlir;

namespace attn::runtime {
namespace {
RankedTensorType withDynamicSizes(RankedTensorType type, ArrayRef<bool> keep) {
  SmallVector<int64_t> shape(type.getShape());
  for (auto [dimension, size] : llvm::enumerate(shape))
    if (dimension >= keep.size() || !keep[dimension])
      size = ShapedType::kDynamic;
  return RankedTensorType::get(shape, type.getElementType());
}

/// Makes batch, head and sequence sizes of the variant's function dynamic, keeping head dims
/// (what the kernels specialize on) and a bias's broadcast 1s (what its shape means). The
/// kernels run at every size, so the IR that is keyed and compiled must not claim one. The
/// function may only hand its arguments to attn.attention and return its result: the kernels
/// replace the function, so any other op would be silently dropped.
void generalizeSizes(func::FuncOp function, mlir::attn::AttentionOp op) {
  Block &body = function.getBody().front();
  for (Operation &other : body.without_terminator())
    if (&other != op.getOperation())
      throw CompileError("attention variant IR: the function holding attn.attention may only "
                         "pass its arguments to it and return its result, found '" +
                         other.getName().getStringRef().str() +
                         "' (the kernels replace the function, so it would be ignored)");
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  if (ret.getNumOperands() != 1 || ret.getOperand(0) != op.getResult())
    throw CompileError("attention variant IR: the function must return the attn.attention "
                       "result and nothing else");
  for (Value operand : op->getOperands())
    if (!isa<BlockArgument>(operand) ||
        cast<BlockArgument>(operand).getOwner() != &body)
      throw CompileError("attention variant IR: every attn.attention operand must be an "
                         "argument of its function");

  auto generalize = [&](Value value, ArrayRef<bool> keep) {
    if (auto type = dyn_cast<RankedTensorType>(value.getType()))
      value.setType(withDynamicSizes(type, keep));
  };
  // [B, H, S, D]: only the head dim is fixed.
  const bool headDimOnly[] = {false, false, false, true};
  for (Value operand : {op.getQuery(), op.getKey(), op.getValue()})
    generalize(operand, headDimOnly);
  generalize(op.getResult(), headDimOnly);
  if (Value bias = op.getBias()) {
    auto type = cast<RankedTensorType>(bias.getType());
    const bool broadcast[] = {type.getDimSize(0) == 1, type.getDimSize(1) == 1, false, false};
    generalize(bias, broadcast);
  }
  if (Value lengths = op.getKvLengths())
    generalize(lengths, {});
  // Captures: every size dynamic (the call's sizes are checked against the IR's static ones,
  // recorded before this). The regions take one argument per capture of the operand's type.
  for (Value capture : op.getCaptures())
    generalize(capture, {});
  const size_t captureCount = op.getCaptures().size();
  for (Region *region : {&op.getScoreMod(), &op.getMask()}) {
    if (captureCount == 0 || region->empty())
      continue;
    Block &block = region->front();
    const size_t first = block.getNumArguments() - captureCount;
    for (auto [position, capture] : llvm::enumerate(op.getCaptures()))
      block.getArgument(first + position).setType(capture.getType());
  }
  function.setFunctionType(FunctionType::get(function.getContext(), body.getArgumentTypes(),
                                             ret.getOperandTypes()));
}

std::string typeText(Type type) {
  std::string text;
  llvm::raw_string_ostream(text) << type;
  return text;
}

/// The variant's captured tensors: the function arguments that feed `captures`, in argument
/// order, checked against the call's (count, rank, element kind). Runs before generalizeSizes,
/// so that the static sizes written in the IR are recorded for every call to be checked against.
VariantCaptures collectCaptures(const VariantSpec &spec, func::FuncOp function,
                                mlir::attn::AttentionOp op, const std::string &functionName) {
  VariantCaptures result;
  Block &body = function.getBody().front();
  SmallVector<unsigned> arguments;
  for (auto [position, operand] : llvm::enumerate(op.getCaptures())) {
    auto argument = dyn_cast<BlockArgument>(operand);
    if (!argument || argument.getOwner() != &body)
      throw CompileError("attention variant IR: every attn.attention operand must be an "
                         "argument of its function, capture " +
                         std::to_string(position) + " is not");
    arguments.push_back(argument.getArgNumber());
  }
  llvm::sort(arguments);
  arguments.erase(std::unique(arguments.begin(), arguments.end()), arguments.end());
  // An argument is a capture or one of q, k, v, bias, kv_lengths: the call passes it once.
  for (Value other : {op.getQuery(), op.getKey(), op.getValue(), op.getBias(), op.getKvLengths()})
    if (auto argument = dyn_cast_or_null<BlockArgument>(other))
      if (llvm::is_contained(arguments, argument.getArgNumber()))
        throw CompileError("attention variant IR: argument " +
                           std::to_string(argument.getArgNumber()) + " of @" + functionName +
                           " feeds both captures and q, k, v, bias or kv_lengths; pass a "
                           "capture as an argument of its own");

  auto argumentName = [&](unsigned number) {
    return "argument " + std::to_string(number) + " of @" + functionName;
  };
  if (arguments.size() != spec.captures.size()) {
    std::string declared;
    for (unsigned number : arguments)
      declared += (declared.empty() ? "" : ", ") + typeText(body.getArgument(number).getType());
    throw CompileError(
        "attention variant IR (@" + functionName + ") reads " +
        std::to_string(arguments.size()) + " captured tensor" +
        (arguments.size() == 1 ? "" : "s") + (declared.empty() ? "" : " (" + declared + ")") +
        " but the call passes " + std::to_string(spec.captures.size()) +
        (arguments.empty() ? ": only a score_mod or mask region that reads captures takes them"
                           : ": pass one tensor per capture, in the function's argument order"));
  }
  for (auto [index, number] : llvm::enumerate(arguments)) {
    auto type = cast<RankedTensorType>(body.getArgument(number).getType());
    const CaptureSignature &given = spec.captures[index];
    const std::string prefix = "capture " + std::to_string(index) + " (" + argumentName(number) +
                               ") is " + typeText(type) + " in the variant IR, but the call " +
                               "passes " + given.description;
    CaptureDeclaration declaration;
    Type element = type.getElementType();
    if (element.isF32())
      declaration.element = CaptureElement::Float32;
    else if (element.isSignlessInteger(32))
      declaration.element = CaptureElement::Int32;
    else if (element.isSignlessInteger(64))
      declaration.element = CaptureElement::Int64;
    else
      throw CompileError(prefix + ": captures must be f32, i32 or i64 tensors");
    if (type.getRank() != given.rank)
      throw CompileError(prefix + ": the ranks differ (" + std::to_string(type.getRank()) +
                         " vs " + std::to_string(given.rank) + ")");
    const bool floating = declaration.element == CaptureElement::Float32;
    if (floating != given.floating)
      throw CompileError(prefix + (floating ? ": an f32 capture takes a floating tensor"
                                            : ": an integer capture takes an integer or bool "
                                              "tensor"));
    for (int64_t size : type.getShape())
      declaration.sizes.push_back(ShapedType::isDynamic(size) ? -1 : size);
    declaration.type = typeText(type);
    declaration.argument = argumentName(number);
    result.declarations.push_back(std::move(declaration));
  }
  for (Value operand : op.getCaptures())
    result.callIndex.push_back(
        llvm::find(arguments, cast<BlockArgument>(operand).getArgNumber()) - arguments.begin());
  return result;
}

std::string generatedSource(const std::string &normalizer, const VariantSpec &spec) {
  std::ostringstream qk, vo, text;
  qk << "tensor<?x?x?x" << spec.headDim << "xf32>";
  vo << "tensor<?x?x?x" << spec.valueHeadDim << "xf32>";
  const char *lengthsArgument = spec.keyLengths ? ", %kv_lengths: tensor<?xi64>" : "";
  const char *lengthsOperand = spec.keyLengths ? " kv_lengths(%kv_lengths : tensor<?xi64>)" : "";
  text << "func.func @attention(%q: " << qk.str() << ", %k: " << qk.str() << ", %v: " << vo.str()
       << lengthsArgument << ") -> " << vo.str() << " {\n"
       << "  %o = attn.attention %q, %k, %v" << lengthsOperand << " normalizer(" << normalizer
       << ") : " << qk.str() << ", " << qk.str() << ", " << vo.str() << " -> " << vo.str() << "\n"
       << "  return %o : " << vo.str() << "\n}\n";
  return text.str();
}
} // namespace

OwningOpRef<ModuleOp> buildVariantModule(const VariantSpec &spec, MLIRContext &context,
                                         VariantCaptures *captures) {
  if (spec.headDim <= 0 || spec.valueHeadDim <= 0)
    throw CompileError("head dims must be positive, got D = " + std::to_string(spec.headDim) +
                       ", Dv = " + std::to_string(spec.valueHeadDim));
  static const std::string kMlirPrefix = "mlir:";
  bool fromIr = spec.variant.rfind(kMlirPrefix, 0) == 0;
  std::string source;
  if (fromIr) {
    source = spec.variant.substr(kMlirPrefix.size());
  } else {
    if (!spec.captures.empty())
      throw CompileError("attention variant '" + spec.variant + "' reads no captured tensors, "
                         "but the call passes " + std::to_string(spec.captures.size()) +
                         ": captures are read by the score_mod and mask regions of `mlir:` "
                         "variants");
    std::string error;
    auto normalizer = mlir::attn::parseNormalizerShorthand(spec.variant, &context, error);
    if (failed(normalizer))
      throw CompileError("attention variant '" + spec.variant + "': " + error +
                         "; or give mlir:<module text with an attn.attention>");
    std::string attribute;
    llvm::raw_string_ostream(attribute) << Attribute(*normalizer);
    source = generatedSource(attribute, spec);
  }

  DiagnosticCollector diagnostics(context);
  OwningOpRef<ModuleOp> parsed = parseSourceString<ModuleOp>(source, &context, "variant");
  if (!parsed)
    throw CompileError("attention variant IR does not parse or verify:\n" + diagnostics.text());

  mlir::attn::AttentionOp found;
  parsed->walk([&](mlir::attn::AttentionOp op) {
    if (!found)
      found = op;
  });
  if (!found)
    throw CompileError("attention variant IR holds no attn.attention op");
  if (found.getHeadDim() != spec.headDim || found.getValueHeadDim() != spec.valueHeadDim)
    throw CompileError(
        "attention variant IR has head dims D = " + std::to_string(found.getHeadDim()) +
        ", Dv = " + std::to_string(found.getValueHeadDim()) + " but the inputs have D = " +
        std::to_string(spec.headDim) + ", Dv = " + std::to_string(spec.valueHeadDim));
  auto function = found->getParentOfType<func::FuncOp>();
  if (!function)
    throw CompileError("attention variant IR: attn.attention must sit in a func.func");

  // Keep only the variant's function, named so that the kernels have fixed symbols.
  OpBuilder builder(&context);
  OwningOpRef<ModuleOp> module = ModuleOp::create(builder.getUnknownLoc());
  builder.setInsertionPointToEnd(module->getBody());
  auto copy = cast<func::FuncOp>(builder.clone(*function));
  const std::string functionName = function.getSymName().str();
  copy.setSymName("attention");
  copy.walk([&](mlir::attn::AttentionOp op) {
    if (spec.causal)
      op.setCausal(true);
    if (spec.scale)
      op.setScaleAttr(builder.getF32FloatAttr(static_cast<float>(*spec.scale)));
  });
  int64_t count = 0;
  mlir::attn::AttentionOp attention;
  copy.walk([&](mlir::attn::AttentionOp op) {
    attention = op;
    ++count;
  });
  if (count != 1)
    throw CompileError("attention variant IR: the function holding attn.attention must hold "
                       "exactly one, found " +
                       std::to_string(count));
  // Key lengths are a property of the call (a ragged batch), not of the variant: IR written
  // without them gets them as one more function argument.
  if (spec.keyLengths && !attention.getKvLengths()) {
    auto lengthsType = RankedTensorType::get({ShapedType::kDynamic}, builder.getI64Type());
    Block &body = copy.getBody().front();
    attention.getKvLengthsMutable().assign(body.addArgument(lengthsType, attention.getLoc()));
  } else if (!spec.keyLengths && attention.getKvLengths()) {
    throw CompileError("attention variant IR takes kv_lengths: pass the key lengths to the call");
  }
  // A bias operand is a captured tensor for the kernels (attn-legalize's rewrite, done here
  // first): the call passes it among the captures, at its function argument's position.
  if (attention.getBias()) {
    if (!isa<BlockArgument>(attention.getBias()))
      throw CompileError("attention variant IR: every attn.attention operand must be an "
                         "argument of its function, the bias is not");
    // Its [Sq, Sk] follow q and k, which run at every size; only its broadcast 1s mean
    // something (kept, and checked on every call).
    Value bias = attention.getBias();
    auto biasType = cast<RankedTensorType>(bias.getType());
    const bool broadcast[] = {biasType.getDimSize(0) == 1, biasType.getDimSize(1) == 1, false,
                              false};
    bias.setType(withDynamicSizes(biasType, broadcast));
    if (failed(mlir::attn::moveBiasIntoCaptures(attention)))
      throw CompileError("attention variant IR: " + diagnostics.text());
  }
  VariantCaptures declared = collectCaptures(spec, copy, attention, functionName);
  generalizeSizes(copy, attention);
  if (captures)
    *captures = std::move(declared);
  if (failed(module->verify()))
    throw CompileError("attention variant IR does not verify:\n" + diagnostics.text());
  return module;
}

CanonicalVariant buildCanonicalVariant(const VariantSpec &spec, MLIRContext &context) {
  CanonicalVariant variant;
  variant.module = buildVariantModule(spec, context, &variant.captures);
  DiagnosticCollector diagnostics(context);
  PassManager canonicalize(&context);
  canonicalize.addPass(createCanonicalizerPass());
  if (failed(canonicalize.run(*variant.module)))
    throw CompileError("canonicalizing attention variant '" + spec.variant.substr(0, 200) +
                       "' failed:\n" + diagnostics.text());
  variant.module->walk([&](mlir::attn::AttentionOp op) {
    variant.rowWise = op.getNormalizer().isRowWise();
    // The kernels take the op's captures in operand order: canonicalization must keep them.
    if (op.getCaptures().size() != variant.captures.callIndex.size())
      throw CompileError("canonicalizing attention variant '" + spec.variant.substr(0, 200) +
                         "' changed its captures (" +
                         std::to_string(variant.captures.callIndex.size()) + " before, " +
                         std::to_string(op.getCaptures().size()) + " after)");
  });
  llvm::raw_string_ostream keyStream(variant.keyText);
  variant.module->print(keyStream, OpPrintingFlags().printGenericOpForm());
  return variant;
}
} // namespace attn::runtime
