#include "runtime/Log.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <strings.h>

namespace attn::runtime {
namespace {
LogLevel parseLevel(const char *text) {
  if (!text || !*text)
    return LogLevel::Warning;
  struct Name {
    const char *name;
    LogLevel level;
  };
  static const Name names[] = {{"error", LogLevel::Error},
                               {"warning", LogLevel::Warning},
                               {"warn", LogLevel::Warning},
                               {"info", LogLevel::Info},
                               {"debug", LogLevel::Debug}};
  for (const Name &name : names)
    if (strcasecmp(text, name.name) == 0)
      return name.level;
  std::fprintf(stderr,
               "[attn warning] ATTN_LOG=%s is not a level (error, warning, info, debug); "
               "using warning\n",
               text);
  return LogLevel::Warning;
}

const char *levelName(LogLevel level) {
  switch (level) {
  case LogLevel::Error:
    return "error";
  case LogLevel::Warning:
    return "warning";
  case LogLevel::Info:
    return "info";
  case LogLevel::Debug:
    return "debug";
  }
  return "?";
}
} // namespace

LogLevel logLevel() {
  static const LogLevel level = parseLevel(std::getenv("ATTN_LOG"));
  return level;
}

bool logEnabled(LogLevel level) { return static_cast<int>(level) <= static_cast<int>(logLevel()); }

void log(LogLevel level, const std::string &message) {
  if (!logEnabled(level))
    return;
  // One fprintf per line keeps lines from concurrent threads whole.
  std::fprintf(stderr, "[attn %s] %s\n", levelName(level), message.c_str());
}

void logOnce(LogLevel level, const std::string &onceKey, const std::string &message) {
  static std::mutex &mutex = *new std::mutex;
  static auto &seen = *new std::set<std::string>;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!seen.insert(onceKey).second)
      return;
  }
  log(level, message);
}
} // namespace attn::runtime
