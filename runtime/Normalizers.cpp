#include "runtime/Normalizers.h"

#include "dialects/attn/NormalizerShorthand.h"
#include "runtime/CpuKernels.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/raw_ostream.h"

#include <mutex>

namespace attn::runtime {
namespace {
/// One context for name lookups; attributes are uniqued in it, so access is serialized.
struct NameContext {
  std::mutex mutex;
  mlir::MLIRContext context{mlir::MLIRContext::Threading::DISABLED};
};

NameContext &nameContext() {
  static NameContext &names = *new NameContext; // leaked: used from static destructors
  return names;
}
} // namespace

NormalizerInfo resolveNormalizer(const std::string &shorthand) {
  NameContext &names = nameContext();
  std::lock_guard<std::mutex> lock(names.mutex);
  std::string error;
  mlir::attn::NormalizerShorthand spelled;
  auto normalizer =
      mlir::attn::parseNormalizerShorthand(shorthand, &names.context, error, &spelled);
  if (mlir::failed(normalizer))
    throw CompileError("attention normalizer '" + shorthand + "': " + error);
  NormalizerInfo info;
  llvm::StringRef qualified = normalizer->getAbstractAttribute().getName(); // "attn.sigmoid"
  info.name = qualified.substr(qualified.find('.') + 1).str();
  info.parameters.assign(spelled.parameters.begin(), spelled.parameters.end());
  llvm::raw_string_ostream(info.attribute) << mlir::Attribute(*normalizer);
  info.rowWise = normalizer->isRowWise();
  return info;
}

std::vector<std::string> normalizerNames() {
  NameContext &names = nameContext();
  std::lock_guard<std::mutex> lock(names.mutex);
  auto known = mlir::attn::namedNormalizers(&names.context);
  return {known.begin(), known.end()};
}

} // namespace attn::runtime
