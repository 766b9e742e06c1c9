// SHA-256 of bytes as lower-case hex: the kernel cache's keys and entry checksums.
#ifndef RUNTIME_CONTENTHASH_H
#define RUNTIME_CONTENTHASH_H

#include <string>
#include <string_view>

namespace attn::runtime {
std::string sha256Hex(std::string_view bytes);
} // namespace attn::runtime

#endif // RUNTIME_CONTENTHASH_H
