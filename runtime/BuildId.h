// The compiler's build id: part of every kernel cache key, so that a rebuilt compiler never
// reads kernels an older one produced.
#ifndef RUNTIME_BUILDID_H
#define RUNTIME_BUILDID_H

#include <string>

namespace attn::runtime {
/// "llvm-<version> attn-<git hash>[-dirty]", fixed at build time.
const std::string &compilerBuildId();
} // namespace attn::runtime

#endif // RUNTIME_BUILDID_H
