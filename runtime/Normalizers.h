// Normalizer names as users type them (`sigmoid(bias=-2)`), resolved by the dialect's one
// shorthand parser. Free of MLIR and torch types, for the torch layer, models and CLIs.
#ifndef RUNTIME_NORMALIZERS_H
#define RUNTIME_NORMALIZERS_H

#include <string>
#include <utility>
#include <vector>

namespace attn::runtime {

struct NormalizerInfo {
  /// The attribute's mnemonic: `softmax`, `sigmoid`, ...
  std::string name;
  /// The parameters as written in the shorthand, in order (validated by the attribute); empty
  /// when the attribute syntax was given.
  std::vector<std::pair<std::string, std::string>> parameters;
  /// The attribute as the dialect prints it, e.g. `#attn.sigmoid<bias = -2.000000e+00>`.
  std::string attribute;
  /// Row-wise (running max and sum) rather than elementwise.
  bool rowWise = false;
};

/// Resolves a shorthand, or the attribute syntax. Throws CompileError (runtime/CpuKernels.h)
/// naming the known normalizers and the closest one.
NormalizerInfo resolveNormalizer(const std::string &shorthand);

/// Every normalizer callable by name, in the dialect's definition order.
std::vector<std::string> normalizerNames();

} // namespace attn::runtime

#endif // RUNTIME_NORMALIZERS_H
