#include "runtime/BuildId.h"

#include "runtime/BuildIdGenerated.h"

#include "llvm/Config/llvm-config.h"

namespace attn::runtime {
const std::string &compilerBuildId() {
  static const std::string id =
      std::string("llvm-") + LLVM_VERSION_STRING + " attn-" + ATTN_GIT_REVISION;
  return id;
}
} // namespace attn::runtime
