#include "runtime/Jit.h"

#include "runtime/BuildId.h"
#include "runtime/ContentHash.h"
#include "runtime/HostObject.h"
#include "runtime/Log.h"
#include "runtime/TieredObject.h"

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

using Clock = std::chrono::steady_clock;
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
  const std::string tiered = environment("ATTN_TIERED_COMPILE");
  config.tiered = config.dumpDirectory.empty() && (tiered.empty() || truthy(tiered));
  const std::string speculate = environment("ATTN_SPECULATE_BACKWARD");
  config.speculateBackward = speculate.empty() || truthy(speculate);
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

std::optional<std::string> Jit::diskLookup(const ArtifactRequest &request,
                                           const std::string &key,
                                           KernelCache::KeyLock &lock) {
  if (!config_.dumpDirectory.empty() || !cache_.enabled())
    return std::nullopt;
  auto start = std::chrono::steady_clock::now();
  if (std::optional<std::string> hit = cache_.load(key)) {
    diskHits_.fetch_add(1, std::memory_order_relaxed);
    log(LogLevel::Info, "disk cache hit for " + request.label + " (" + key.substr(0, 16) + ", " +
                            formatMillis(millisSince(start)) + ")");
    return hit;
  }
  // Another process may be compiling this key: wait for it, then look again.
  lock = cache_.lock(key);
  if (std::optional<std::string> hit = cache_.load(key)) {
    diskHits_.fetch_add(1, std::memory_order_relaxed);
    log(LogLevel::Info, "disk cache hit for " + request.label +
                            " after waiting for another "
                            "process (" +
                            key.substr(0, 16) + ")");
    return hit;
  }
  return std::nullopt;
}

std::string Jit::dumpFolderFor(const ArtifactRequest &request, const std::string &key) const {
  if (config_.dumpDirectory.empty())
    return "";
  std::string dumpFolder = config_.dumpDirectory + "/" + key.substr(0, 16);
  ::mkdir(config_.dumpDirectory.c_str(), 0755);
  ::mkdir(dumpFolder.c_str(), 0755);
  if (FILE *file = std::fopen((dumpFolder + "/key.txt").c_str(), "w")) {
    std::fprintf(file, "label: %s\ntarget: %s\noptions: %s\nbuild: %s\nkey: %s\n",
                 request.label.c_str(), request.target.c_str(), request.options.c_str(),
                 compilerBuildId().c_str(), key.c_str());
    std::fclose(file);
  }
  return dumpFolder;
}

namespace {
/// The target's first three words (kind, triple, CPU); the feature list is too long to log.
std::string shortTarget(const std::string &target) {
  size_t end = 0;
  for (int word = 0; word < 3 && end != std::string::npos; ++word)
    end = target.find(' ', end + 1);
  return target.substr(0, end);
}
} // namespace

std::string Jit::artifact(const ArtifactRequest &request,
                          const std::function<std::string(const std::string &)> &compile) {
  const std::string key = request.key();
  KernelCache::KeyLock lock;
  if (std::optional<std::string> hit = diskLookup(request, key, lock))
    return *hit;
  std::string dumpFolder = dumpFolderFor(request, key);
  auto start = std::chrono::steady_clock::now();
  std::string bytes = compile(dumpFolder);
  compiles_.fetch_add(1, std::memory_order_relaxed);
  log(LogLevel::Info, "compiled " + request.label + " for " + shortTarget(request.target) +
                          " in " + formatMillis(millisSince(start)) + " (" + key.substr(0, 16) +
                          ", " + std::to_string(bytes.size()) + " bytes)" +
                          (dumpFolder.empty() ? std::string()
                                              : ", stages dumped to " + dumpFolder));
  if (cache_.enabled())
    cache_.store(key, bytes);
  return bytes;
}

std::string Jit::tieredArtifact(const ArtifactRequest &request,
                                const std::function<TieredCompile(const std::string &)> &compile,
                                std::function<void(const std::string &)> ready, bool &final) {
  const std::string key = request.key();
  auto lock = std::make_shared<KernelCache::KeyLock>();
  if (std::optional<std::string> hit = diskLookup(request, key, *lock)) {
    final = true;
    return *hit;
  }
  std::string dumpFolder = dumpFolderFor(request, key);
  auto start = std::chrono::steady_clock::now();
  TieredCompile compiled;
  {
    // `compile` warms the code generator up (BackgroundCompiles::warmUpCodeGeneration).
    BackgroundCompiles::Foreground foreground;
    compiled = compile(dumpFolder);
  }
  compiles_.fetch_add(1, std::memory_order_relaxed);
  final = !compiled.optimize;
  log(LogLevel::Info, std::string(final ? "compiled " : "compiled (quick tier) ") +
                          request.label + " for " + shortTarget(request.target) + " in " +
                          formatMillis(millisSince(start)) + " (" + key.substr(0, 16) + ", " +
                          std::to_string(compiled.bytes.size()) + " bytes)" +
                          (dumpFolder.empty() ? std::string()
                                              : ", stages dumped to " + dumpFolder));
  if (final) {
    if (cache_.enabled())
      cache_.store(key, compiled.bytes);
    return compiled.bytes;
  }
  quickObjects_.fetch_add(1, std::memory_order_relaxed);
  const Clock::time_point queued = Clock::now();
  BackgroundCompiles::instance().submit(
      [this, key, label = request.label, lock, optimize = std::move(compiled.optimize),
       ready = std::move(ready), queued]() mutable {
        auto begin = std::chrono::steady_clock::now();
        std::string bytes = optimize();
        optimize = nullptr; // frees the LLVM module now
        if (cache_.enabled())
          cache_.store(key, bytes);
        lock.reset();
        log(LogLevel::Info, "compiled (optimized tier) " + label + " in " +
                                formatMillis(millisSince(begin)) + ", " +
                                formatMillis(millisSince(queued)) + " after the quick tier (" +
                                std::to_string(bytes.size()) + " bytes)");
        // At exit the object is only worth its disk entry: loading it would be wasted work.
        if (!BackgroundCompiles::instance().exiting())
          ready(bytes);
        optimizedLater_.fetch_add(1, std::memory_order_release);
      });
  return compiled.bytes;
}

void Jit::waitForBackgroundCompiles() { BackgroundCompiles::instance().waitIdle(); }

JitStatistics Jit::statistics() const {
  JitStatistics statistics;
  statistics.compiles = compiles_.load();
  statistics.diskHits = diskHits_.load();
  statistics.memoryHits = memoryHits_.load();
  statistics.quickObjects = quickObjects_.load();
  statistics.optimizedLater = optimizedLater_.load(std::memory_order_acquire);
  return statistics;
}

void Jit::resetStatistics() {
  compiles_ = 0;
  diskHits_ = 0;
  memoryHits_ = 0;
  quickObjects_ = 0;
  optimizedLater_ = 0;
}
} // namespace attn::runtime
