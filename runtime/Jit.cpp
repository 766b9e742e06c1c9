#include "runtime/Jit.h"

#include "runtime/BuildId.h"
#include "runtime/ContentHash.h"
#include "runtime/Log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>

namespace attn::runtime {
namespace {
std::string environment(const char *name) {
  const char *value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

bool truthy(const std::string &value) {
  return !value.empty() && value != "0" && value != "false" && value != "no" && value != "off";
}

double millisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

std::string formatMillis(double millis) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f ms", millis);
  return text;
}
} // namespace

JitConfig JitConfig::fromEnvironment() {
  JitConfig config;
  if (!truthy(environment("ATTN_CACHE_DISABLE"))) {
    config.cacheDirectory = environment("ATTN_CACHE_DIR");
    if (config.cacheDirectory.empty()) {
      std::string xdg = environment("XDG_CACHE_HOME");
      std::string home = environment("HOME");
      if (!xdg.empty())
        config.cacheDirectory = xdg + "/attn";
      else if (!home.empty())
        config.cacheDirectory = home + "/.cache/attn";
    }
  }
  config.dumpDirectory = environment("ATTN_DUMP_DIR");
  return config;
}

std::string ArtifactRequest::key() const {
  // Length-prefixed fields, so no two different requests concatenate to the same text.
  std::string material;
  for (const std::string *field : {&canonicalIr, &target, &options, &compilerBuildId()}) {
    material += std::to_string(field->size());
    material += ':';
    material += *field;
  }
  return sha256Hex(material);
}

Jit &Jit::instance() {
  // Leaked on purpose: kernels handed out by the caches may be used during static destruction.
  static Jit &jit = *new Jit;
  return jit;
}

Jit::Jit() : config_(JitConfig::fromEnvironment()), cache_(config_.cacheDirectory) {
  log(LogLevel::Info, cache_.enabled() ? "kernel cache: " + cache_.directory()
                                       : std::string("kernel cache: disabled (memory only)"));
}

void Jit::reconfigureFromEnvironment() {
  config_ = JitConfig::fromEnvironment();
  cache_ = KernelCache(config_.cacheDirectory);
}

std::string Jit::artifact(const ArtifactRequest &request,
                          const std::function<std::string(const std::string &)> &compile) {
  const std::string key = request.key();
  const bool dumping = !config_.dumpDirectory.empty();
  KernelCache::KeyLock lock;
  if (!dumping && cache_.enabled()) {
    auto start = std::chrono::steady_clock::now();
    if (std::optional<std::string> hit = cache_.load(key)) {
      diskHits_.fetch_add(1, std::memory_order_relaxed);
      log(LogLevel::Info, "disk cache hit for " + request.label + " (" + key.substr(0, 16) + ", " +
                              formatMillis(millisSince(start)) + ")");
      return *hit;
    }
    // Another process may be compiling this key: wait for it, then look again.
    lock = cache_.lock(key);
    if (std::optional<std::string> hit = cache_.load(key)) {
      diskHits_.fetch_add(1, std::memory_order_relaxed);
      log(LogLevel::Info, "disk cache hit for " + request.label +
                              " after waiting for another "
                              "process (" +
                              key.substr(0, 16) + ")");
      return *hit;
    }
  }

  std::string dumpFolder;
  if (dumping) {
    dumpFolder = config_.dumpDirectory + "/" + key.substr(0, 16);
    ::mkdir(config_.dumpDirectory.c_str(), 0755);
    ::mkdir(dumpFolder.c_str(), 0755);
    if (FILE *file = std::fopen((dumpFolder + "/key.txt").c_str(), "w")) {
      std::fprintf(file, "label: %s\ntarget: %s\noptions: %s\nbuild: %s\nkey: %s\n",
                   request.label.c_str(), request.target.c_str(), request.options.c_str(),
                   compilerBuildId().c_str(), key.c_str());
      std::fclose(file);
    }
  }
  auto start = std::chrono::steady_clock::now();
  std::string bytes = compile(dumpFolder);
  compiles_.fetch_add(1, std::memory_order_relaxed);
  // The target's first three words (kind, triple, CPU); the feature list is too long to log.
  size_t end = 0;
  for (int word = 0; word < 3 && end != std::string::npos; ++word)
    end = request.target.find(' ', end + 1);
  log(LogLevel::Info, "compiled " + request.label + " for " + request.target.substr(0, end) +
                          " in " + formatMillis(millisSince(start)) + " (" + key.substr(0, 16) +
                          ", " + std::to_string(bytes.size()) + " bytes)" +
                          (dumping ? ", stages dumped to " + dumpFolder : std::string()));
  if (cache_.enabled())
    cache_.store(key, bytes);
  return bytes;
}

JitStatistics Jit::statistics() const {
  JitStatistics statistics;
  statistics.compiles = compiles_.load();
  statistics.diskHits = diskHits_.load();
  statistics.memoryHits = memoryHits_.load();
  return statistics;
}

void Jit::resetStatistics() {
  compiles_ = 0;
  diskHits_ = 0;
  memoryHits_ = 0;
}
} // namespace attn::runtime
