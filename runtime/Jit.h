// runtime::Jit — where every compiled kernel comes from. Three levels:
//   memory: per process, keyed by what the caller asks for (cheap to form; sharded lookup);
//   disk:   KernelCache, keyed by sha256(canonical IR, target, options, compiler build id);
//   compile.
// Each level compiles a key once: threads wait on the one compiling thread, processes on a
// per-key file lock. Free of MLIR and torch types.
#ifndef RUNTIME_JIT_H
#define RUNTIME_JIT_H

#include "runtime/KernelCache.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

namespace attn::runtime {

/// What the environment asks for, read once per process:
///   ATTN_CACHE_DIR     the disk cache (default $XDG_CACHE_HOME/attn, else ~/.cache/attn);
///   ATTN_CACHE_DISABLE=1  no disk cache (kernels still live in memory for the process);
///   ATTN_DUMP_DIR=DIR  every compile writes each stage's IR, LLVM IR and PTX under DIR
///                      (and bypasses the disk cache so that there is something to dump);
///   ATTN_LOG=info      logs compiles, disk hits and kernel resources (see Log.h);
///   ATTN_TIERED_COMPILE=0  CPU kernels compile optimized before their first call, instead of
///                      starting as a quick object that the optimized one replaces from the
///                      background (runtime/TieredObject.h; the default). Dumping implies off;
///   ATTN_SPECULATE_BACKWARD=0  CPU backward kernels compile on first use only, instead of
///                      beside the forward as soon as a variant is asked for (at its priority
///                      when the caller expects the backward, at a lower one when it does not
///                      say; never when it says it will not: getCpuKernels' BackwardUse).
struct JitConfig {
  std::string cacheDirectory; ///< empty: disk cache disabled
  std::string dumpDirectory;  ///< empty: no dumps
  bool tiered = true;         ///< tieredArtifact may return a quick object first
  bool speculateBackward = true;
  static JitConfig fromEnvironment();
};

/// Counters since process start (or the last reset), for tests and benchmarks.
struct JitStatistics {
  uint64_t compiles = 0;   ///< artifacts built by the compiler
  uint64_t diskHits = 0;   ///< artifacts read from the disk cache
  uint64_t memoryHits = 0; ///< requests answered by the in-process cache
  uint64_t quickObjects = 0;     ///< compiles that first returned a quick-tier object
  uint64_t optimizedLater = 0;   ///< optimized objects that replaced a quick one
};

/// What a compile that may deliver in two tiers returns (tieredArtifact).
struct TieredCompile {
  std::string bytes; ///< object code usable now
  /// Empty: `bytes` are the final object. Otherwise makes the final object; runs later on the
  /// background compile thread (runtime/TieredObject.h), so it owns everything it needs.
  std::function<std::string()> optimize;
};

/// The key material of one artifact. `canonicalIr` is the canonicalized attn IR; target and
/// options name everything else the compiled bytes depend on.
struct ArtifactRequest {
  std::string canonicalIr;
  std::string target;  ///< e.g. "cpu x86_64-pc-linux-gnu znver3 +avx2,..." or "sm_90a"
  std::string options; ///< pipeline options, tile sizes, dtype, ...
  std::string label;   ///< human-readable, for logs and dump folders
  /// sha256 over all of the above and the compiler build id.
  std::string key() const;
};

class Jit {
public:
  static Jit &instance();

  const JitConfig &config() const { return config_; }
  const KernelCache &diskCache() const { return cache_; }

  /// The artifact's bytes: from the disk cache, or from `compile` (then stored). Processes
  /// racing on one key compile it once. `compile(dumpDirectory)` gets the folder to dump its
  /// stages into, or "" when dumping is off. Exceptions from `compile` propagate.
  std::string artifact(const ArtifactRequest &request,
                       const std::function<std::string(const std::string &dumpDirectory)> &compile);

  /// Like artifact(), in tiers. A disk hit returns its (final) bytes and `final` = true. A
  /// miss calls `compile`; when it returns an `optimize` job, the job runs on the background
  /// compile thread, its bytes are stored in the disk cache (the quick bytes never are) and
  /// passed to `ready`. Processes racing on the key still compile it once: the key's file
  /// lock is held until the final bytes are stored.
  std::string tieredArtifact(const ArtifactRequest &request,
                             const std::function<TieredCompile(const std::string &)> &compile,
                             std::function<void(const std::string &finalBytes)> ready,
                             bool &final);
  /// Blocks until every background (optimized-tier) compile queued so far is done.
  void waitForBackgroundCompiles();

  JitStatistics statistics() const;
  void resetStatistics();
  void countMemoryHit() { memoryHits_.fetch_add(1, std::memory_order_relaxed); }

  /// Tests only: re-reads the environment (cache and dump directories).
  void reconfigureFromEnvironment();

private:
  Jit();
  JitConfig config_;
  KernelCache cache_;
  /// A disk hit, or nullopt with `lock` holding the key's lock (when the cache is enabled).
  std::optional<std::string> diskLookup(const ArtifactRequest &request, const std::string &key,
                                        KernelCache::KeyLock &lock);
  std::string dumpFolderFor(const ArtifactRequest &request, const std::string &key) const;
  std::atomic<uint64_t> compiles_{0}, diskHits_{0}, memoryHits_{0}, quickObjects_{0},
      optimizedLater_{0};
};

/// The in-process level: compile-once per key across threads, kept for the process lifetime
/// (kernels are never unloaded; tearing JITs down during static destruction races LLVM's).
/// Sharded so that threads asking for different keys do not contend.
template <typename Value> class MemoryCache {
public:
  using Pointer = std::shared_ptr<const Value>;

  /// Returns the value for `key`, running `make()` once per key however many threads ask.
  /// A failed make is not cached: waiting threads see its exception, later calls retry.
  template <typename Make> Pointer getOrCreate(const std::string &key, Make &&make) {
    Shard &shard = shards_[std::hash<std::string>{}(key) % kShards];
    {
      std::shared_lock<std::shared_mutex> read(shard.mutex);
      auto found = shard.entries.find(key);
      if (found != shard.entries.end() && isReady(found->second)) {
        Jit::instance().countMemoryHit();
        return found->second.get();
      }
    }
    std::promise<Pointer> promise;
    std::shared_future<Pointer> entry;
    bool owner = false;
    {
      std::unique_lock<std::shared_mutex> write(shard.mutex);
      auto found = shard.entries.find(key);
      if (found != shard.entries.end()) {
        entry = found->second;
      } else {
        entry = promise.get_future().share();
        shard.entries.emplace(key, entry);
        owner = true;
      }
    }
    if (!owner)
      return entry.get();
    try {
      promise.set_value(make());
    } catch (...) {
      promise.set_exception(std::current_exception());
      std::unique_lock<std::shared_mutex> write(shard.mutex);
      shard.entries.erase(key);
    }
    return entry.get();
  }

private:
  static bool isReady(const std::shared_future<Pointer> &future) {
    return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  static constexpr size_t kShards = 16;
  struct Shard {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::shared_future<Pointer>> entries;
  };
  std::array<Shard, kShards> shards_;
};

} // namespace attn::runtime

#endif // RUNTIME_JIT_H
