#include "dialects/attn/NormalizerShorthand.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <cstdlib>
#include <type_traits>

using namespace mlir;
using namespace mlir::attn;

namespace {
/// Every attribute of the dialect that implements the normalizer interface, by mnemonic: the
/// list comes from the ODS definitions, so a new normalizer joins it by being defined.
template <typename... Attrs>
SmallVector<StringRef> normalizerMnemonics() {
  SmallVector<StringRef> names;
  (
      [&] {
        if constexpr (std::is_base_of_v<NormalizerAttrInterface::Trait<Attrs>, Attrs>)
          names.push_back(Attrs::getMnemonic());
      }(),
      ...);
  return names;
}

ArrayRef<StringRef> allNormalizerMnemonics() {
  static const SmallVector<StringRef> names = normalizerMnemonics<
#define GET_ATTRDEF_LIST
#include "dialects/attn/AttnAttrs.cpp.inc"
      >();
  return names;
}

bool isIdentifierStart(char c) { return llvm::isAlpha(c) || c == '_'; }
bool isIdentifierChar(char c) { return llvm::isAlnum(c) || c == '_'; }

/// MLIR float literals need digits on both sides of a '.' before any exponent ("1e-3", ".5"
/// and "+2.0" do not lex); a value that is a plain number in C's sense is re-printed so that
/// users may type numbers as they would in Python. Integers stay integers.
std::string asMlirLiteral(StringRef value) {
  std::string text = value.str();
  if (text.empty())
    return text;
  char *end = nullptr;
  double number = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size())
    return text; // not a number: left to the attribute's parser
  StringRef digits = StringRef(text).ltrim("+-");
  if (!digits.empty() && llvm::all_of(digits, llvm::isDigit))
    return StringRef(text).ltrim('+').str();
  char literal[40];
  std::snprintf(literal, sizeof literal, "%.17e", number);
  return literal;
}

std::string closestName(StringRef name, ArrayRef<std::string> known) {
  for (const std::string &candidate : known)
    if (name != candidate && name.edit_distance(candidate) <= 2)
      return candidate;
  return {};
}

std::string knownNamesText(ArrayRef<std::string> known) {
  std::string text;
  for (const std::string &name : known)
    text += (text.empty() ? "" : ", ") + name;
  return text;
}
} // namespace

FailureOr<NormalizerShorthand> mlir::attn::splitNormalizerShorthand(StringRef text,
                                                                    std::string &error) {
  StringRef rest = text.trim();
  NormalizerShorthand shorthand;
  if (rest.empty() || !isIdentifierStart(rest.front())) {
    error = "expected a normalizer name";
    return failure();
  }
  size_t nameEnd = 1;
  while (nameEnd < rest.size() && isIdentifierChar(rest[nameEnd]))
    ++nameEnd;
  shorthand.name = rest.take_front(nameEnd).str();
  rest = rest.drop_front(nameEnd).ltrim();
  if (rest.empty())
    return shorthand;
  if (!rest.consume_front("(") || !rest.consume_back(")")) {
    error = "expected '(key=value, ...)' after '" + shorthand.name + "'";
    return failure();
  }
  rest = rest.trim();
  if (rest.empty())
    return shorthand;
  SmallVector<StringRef> items;
  rest.split(items, ',');
  for (StringRef item : items) {
    auto [key, value] = item.split('=');
    key = key.trim();
    value = value.trim();
    bool validKey = !key.empty() && isIdentifierStart(key.front()) &&
                    llvm::all_of(key, isIdentifierChar);
    if (!validKey || !item.contains('=') || value.empty()) {
      error = "expected 'key=value' in the parameters of '" + shorthand.name + "', got '" +
              item.trim().str() + "'";
      return failure();
    }
    for (const auto &[seen, unused] : shorthand.parameters)
      if (seen == key) {
        error = "parameter '" + key.str() + "' is given twice";
        return failure();
      }
    shorthand.parameters.emplace_back(key.str(), value.str());
  }
  return shorthand;
}

SmallVector<std::string> mlir::attn::namedNormalizers(MLIRContext *context) {
  context->getOrLoadDialect<AttnDialect>();
  SmallVector<std::string> names;
  for (StringRef mnemonic : allNormalizerMnemonics()) {
    // A parameterless spelling parses for every normalizer whose parameters are optional; one
    // that does not parse (required parameters) is still callable by name with them.
    ScopedDiagnosticHandler silence(context, [](Diagnostic &) { return success(); });
    auto attr = dyn_cast_or_null<NormalizerAttrInterface>(
        parseAttribute(("#attn." + mnemonic).str(), context));
    if (!attr || !attr.usesBodyRegion())
      names.push_back(mnemonic.str());
  }
  return names;
}

FailureOr<NormalizerAttrInterface>
mlir::attn::parseNormalizerShorthand(StringRef text, MLIRContext *context, std::string &error,
                                     NormalizerShorthand *spelled) {
  context->getOrLoadDialect<AttnDialect>();
  std::string attributeText;
  StringRef trimmed = text.trim();
  if (trimmed.starts_with("#")) {
    attributeText = trimmed.str();
  } else {
    FailureOr<NormalizerShorthand> shorthand = splitNormalizerShorthand(trimmed, error);
    if (failed(shorthand))
      return failure();
    if (!llvm::is_contained(allNormalizerMnemonics(), shorthand->name)) {
      SmallVector<std::string> known = namedNormalizers(context);
      error = "unknown normalizer '" + shorthand->name + "'";
      if (std::string closest = closestName(shorthand->name, known); !closest.empty())
        error += " (did you mean '" + closest + "'?)";
      error += "; the dialect defines " + knownNamesText(known);
      return failure();
    }
    attributeText = "#attn." + shorthand->name;
    if (!shorthand->parameters.empty()) {
      attributeText += "<";
      for (auto [index, parameter] : llvm::enumerate(shorthand->parameters))
        attributeText += (index ? ", " : "") + parameter.first + " = " +
                         asMlirLiteral(parameter.second);
      attributeText += ">";
    }
    if (spelled)
      *spelled = std::move(*shorthand);
  }

  std::string diagnostics;
  Attribute attr;
  {
    ScopedDiagnosticHandler collect(context, [&](Diagnostic &diagnostic) {
      llvm::raw_string_ostream(diagnostics) << (diagnostics.empty() ? "" : "; ") << diagnostic;
      return success();
    });
    size_t consumed = 0;
    attr = parseAttribute(attributeText, context, Type(), &consumed);
    if (attr && consumed != attributeText.size()) {
      diagnostics = "unexpected text after the attribute: '" +
                    attributeText.substr(consumed) + "'";
      attr = {};
    }
  }
  if (!attr) {
    error = "'" + attributeText + "' is not a valid normalizer: " + diagnostics;
    return failure();
  }
  auto normalizer = dyn_cast<NormalizerAttrInterface>(attr);
  if (!normalizer) {
    error = "'" + attributeText + "' is not a normalizer attribute";
    return failure();
  }
  if (normalizer.usesBodyRegion()) {
    error = "normalizer '" + attributeText +
            "' takes its formula from a normalizer_body region: write the variant as mlir: IR";
    return failure();
  }
  return normalizer;
}
