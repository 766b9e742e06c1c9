// Runtime logging to stderr, filtered by ATTN_LOG (error, warning — the default —, info, debug).
// Free of MLIR and torch types.
#ifndef RUNTIME_LOG_H
#define RUNTIME_LOG_H

#include <string>

namespace attn::runtime {

enum class LogLevel { Error = 0, Warning = 1, Info = 2, Debug = 3 };

/// The level ATTN_LOG asks for, read once per process.
LogLevel logLevel();
bool logEnabled(LogLevel level);
/// Writes `[attn <level>] message` to stderr when the level is enabled.
void log(LogLevel level, const std::string &message);
/// Like log(), but at most once per process for each `onceKey`.
void logOnce(LogLevel level, const std::string &onceKey, const std::string &message);

} // namespace attn::runtime

#endif // RUNTIME_LOG_H
