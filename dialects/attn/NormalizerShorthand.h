// The one parser of normalizer names: `softmax`, `sigmoid(bias=-2)`, `relu(scale=0.01)`, or
// any normalizer attribute of the dialect as `name(key=value, ...)`. The shorthand is only
// spelling: it becomes `#attn.name<key = value, ...>` and the attribute's own parser and
// verifier decide what is valid, so a normalizer added to the dialect is callable by name
// everywhere (torch op, attn-train, attnc) with no other file touched.
#ifndef DIALECTS_ATTN_NORMALIZERSHORTHAND_H
#define DIALECTS_ATTN_NORMALIZERSHORTHAND_H

#include "dialects/attn/AttnDialect.h"

#include <string>
#include <utility>

namespace mlir::attn {

struct NormalizerShorthand {
  std::string name;
  /// In the order written; values as written (numbers are normalized to MLIR literals later).
  SmallVector<std::pair<std::string, std::string>> parameters;
};

/// Splits `name` or `name(key=value, ...)` (spaces allowed). Sets `error` on failure.
FailureOr<NormalizerShorthand> splitNormalizerShorthand(StringRef text, std::string &error);

/// The normalizer attribute a shorthand (or the attribute syntax itself, `#attn.relu<...>`)
/// names, built by the attribute's parser and verifier. Normalizers whose formula lives in a
/// region (`custom`) cannot be named: they need IR. Sets `error` (with the attribute parser's
/// diagnostic, or the names it knows and the closest one) on failure. With `spelled`, also
/// hands back the shorthand as split (left empty for the attribute syntax).
FailureOr<NormalizerAttrInterface> parseNormalizerShorthand(StringRef text, MLIRContext *context,
                                                            std::string &error,
                                                            NormalizerShorthand *spelled = nullptr);

/// The normalizers that can be called by name, in the dialect's definition order.
SmallVector<std::string> namedNormalizers(MLIRContext *context);

} // namespace mlir::attn

#endif // DIALECTS_ATTN_NORMALIZERSHORTHAND_H
