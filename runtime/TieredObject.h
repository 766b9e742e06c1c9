// The tiered CPU JIT's moving parts, free of MLIR and torch types:
//   TieredKernel — one kernel symbol whose address may change once, from the quick tier's code
//     to the optimized tier's, while other threads call it;
//   BackgroundCompiles — the one thread that generates the optimized objects, after the quick
//     objects that callers wait for.
// A kernel is first compiled with the quick code generator (runtime/HostObject.h, CodeTier)
// so that it is callable early; the optimized object is generated on the background thread,
// stored in the disk cache (the quick one never is) and then replaces the function pointer.
// A process that finds the optimized object on disk never sees the quick tier.
#ifndef RUNTIME_TIEREDOBJECT_H
#define RUNTIME_TIEREDOBJECT_H

#include "runtime/CpuExecutor.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace attn::runtime {

/// One kernel symbol of a loaded object, replaceable once by the same symbol of a better
/// object. Callers read address() for every call (an acquire load); a call that started on
/// the old code finishes on it: every object stays loaded and referenced as long as this
/// kernel lives (the executor that holds it), so no code is unmapped under a running call.
class TieredKernel {
public:
  /// `final`: the object is already the optimized one (a disk hit, or tiering off).
  TieredKernel(std::shared_ptr<const LoadedCpuObject> object, std::string symbol, bool final);

  void *address() const { return address_.load(std::memory_order_acquire); }
  /// Whether address() is the optimized code.
  bool optimized() const { return optimized_.load(std::memory_order_acquire); }
  /// Publishes the optimized object's code (thread-safe; later calls are ignored).
  void replace(std::shared_ptr<const LoadedCpuObject> object);

private:
  std::string symbol_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<const LoadedCpuObject>> objects_; // every tier's, kept loaded
  std::atomic<void *> address_{nullptr};
  std::atomic<bool> optimized_{false};
};

/// A kernel handle that converts to the current code address: `call(kernel, ...)` reads the
/// tier at each call. Empty until assigned.
class TieredSymbol {
public:
  TieredSymbol() = default;
  explicit TieredSymbol(std::shared_ptr<TieredKernel> kernel) : kernel_(std::move(kernel)) {}
  operator void *() const { return kernel_ ? kernel_->address() : nullptr; }
  const std::shared_ptr<TieredKernel> &kernel() const { return kernel_; }

private:
  std::shared_ptr<TieredKernel> kernel_;
};

/// The process's background compile thread: runs jobs (the optimized tiers) one at a time,
/// in order, and never while a foreground compile (a caller waiting for a quick tier) is in
/// flight, so that the quick tiers have the cores.
///
/// Process exit. LLVM keeps function-local statics that are constructed on first use (e.g.
/// TargetLibraryInfo's libcall index, built by the first InstCombine that meets a call) and
/// destroyed at exit in reverse order of construction, interleaved with atexit functions. An
/// atexit drain registered at the first compile therefore runs *after* the destructors of every
/// static first used later, and a compile still running or started by it then reads freed
/// memory: a DenseMap probe over freed buckets that never ends (the exit hang seen under ctest
/// with the tiered JIT, and with speculative backward compiles in flight at exit). So the drain
/// runs from the destructor of a thread_local of the main thread, armed when the main thread
/// first enters the JIT: exit() destroys the calling thread's thread_locals before any static
/// object and before any atexit function ([basic.start.term]), so every queued job still runs
/// and reaches the disk cache with all of LLVM alive. An exit from another thread (or a process
/// whose main thread never entered the JIT) falls back to an atexit drain, which waits for the
/// compiles in flight but leaves the queued jobs unrun (their key locks go with the process).
class BackgroundCompiles {
public:
  static BackgroundCompiles &instance();

  void submit(std::function<void()> job);
  /// Blocks until no job is queued or running.
  void waitIdle();
  /// Tests: while held, no job starts (queued jobs wait for release).
  void hold(bool held);
  /// Jobs finished since process start.
  uint64_t finished() const { return finished_.load(std::memory_order_acquire); }
  /// Whether process exit has begun draining (jobs then skip work only useful to a live process).
  bool exiting();

  /// Marks a foreground compile in flight for its lifetime. At process exit, foreground
  /// compiles on other threads are waited for (a little while) too.
  class Foreground {
  public:
    Foreground();
    ~Foreground();
    Foreground(const Foreground &) = delete;
    Foreground &operator=(const Foreground &) = delete;
  };

  /// Marks a speculative compile thread (the backward's, beside the forward) from before it
  /// starts until it ends. Process exit waits for it (LLVM's statics must outlive it); unlike a
  /// Foreground, it never holds the background worker back: it may wait for a key's lock that
  /// another process holds until its own background compile stores the key (counting it would
  /// let two such processes deadlock).
  class Speculation {
  public:
    Speculation();
    ~Speculation();
    Speculation(const Speculation &) = delete;
    Speculation &operator=(const Speculation &) = delete;
  };

  /// A compile's code generation starts: runs the code generator's warm-up once
  /// (warmUpHostCodeGeneration), then registers the atexit fallback drain. Called after the
  /// MLIR passes, so that the speculative backward compiles run theirs meanwhile instead of
  /// waiting for the forward's warm-up.
  void warmUpCodeGeneration();

  /// The exit drain (see the class comment); `staticsAlive`: called from the main thread's
  /// exit, before any static destructor. Later calls return at once.
  void drainAtExit(bool staticsAlive);

private:
  BackgroundCompiles() = default;
  void run();
  /// With mutex_ held, at each entry into the JIT: arms the main thread's exit drain, starts
  /// the worker (from the entering thread, never from a speculative one at lowered priority:
  /// a thread inherits its creator's nice value) and, with `registerAtExit` (only once the
  /// code generator's warm-up has run: warmUpHostCodeGeneration), the atexit fallback drain.
  void ensureStarted(bool registerAtExit);
  /// pthread_atfork's child handler: forgets the parent's threads and jobs.
  void afterForkInChild();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> jobs_;
  std::deque<std::function<void()>> abandoned_; ///< left unrun by the atexit drain, kept alive
  int foreground_ = 0;
  int speculative_ = 0;
  bool running_ = false;
  bool held_ = false;
  bool exiting_ = false;
  bool forkHandlers_ = false;
  bool started_ = false;
  bool workerDone_ = false;
  bool quit_ = false;
  int exitDepth_ = 0; ///< the exiting thread's own foreground compiles (not waited for)
  bool drained_ = false;
  bool exitHandler_ = false;
  bool mainThreadArmed_ = false;
  std::unique_ptr<std::thread> worker_;
  /// In a forked child: the parent's worker objects, released and never destroyed.
  std::vector<std::thread *> orphanedWorkers_;
  std::atomic<uint64_t> finished_{0};
};

/// Lowers the calling thread's scheduling priority by `niceIncrement` (Linux: per thread;
/// elsewhere nothing): speculative compiles yield to the ones a caller waits for.
void lowerThreadPriority(int niceIncrement);

} // namespace attn::runtime

#endif // RUNTIME_TIEREDOBJECT_H
