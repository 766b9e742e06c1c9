#include "runtime/TieredObject.h"

#include "runtime/HostObject.h"
#include "runtime/Log.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <pthread.h>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace attn::runtime {

TieredKernel::TieredKernel(std::shared_ptr<const LoadedCpuObject> object, std::string symbol,
                           bool final)
    : symbol_(std::move(symbol)) {
  void *address = object->lookup(symbol_);
  objects_.push_back(std::move(object));
  optimized_.store(final, std::memory_order_relaxed);
  address_.store(address, std::memory_order_release);
}

void TieredKernel::replace(std::shared_ptr<const LoadedCpuObject> object) {
  void *address = object->lookup(symbol_);
  std::lock_guard<std::mutex> lock(mutex_);
  if (optimized_.load(std::memory_order_relaxed))
    return;
  // The old object stays in objects_: calls that read the old address may still be running.
  objects_.push_back(std::move(object));
  address_.store(address, std::memory_order_release);
  optimized_.store(true, std::memory_order_release);
}

namespace {
/// Foreground compiles in flight on this thread (drainAtExit does not wait for its own).
thread_local int foregroundDepth = 0;

bool onMainThread() {
#if defined(__linux__)
  return static_cast<pid_t>(::syscall(SYS_gettid)) == ::getpid();
#else
  return false;
#endif
}

/// The main thread's exit drain: destroyed when the main thread calls exit() (returning from
/// main included), before any object of static storage duration and any atexit function.
struct MainThreadExit {
  bool armed = false;
  ~MainThreadExit() {
    if (armed)
      BackgroundCompiles::instance().drainAtExit(/*staticsAlive=*/true);
  }
};
thread_local MainThreadExit mainThreadExit;
} // namespace

BackgroundCompiles &BackgroundCompiles::instance() {
  // Leaked: the worker is joined by the exit handler, never by a static destructor.
  static BackgroundCompiles &compiles = *new BackgroundCompiles;
  return compiles;
}

void BackgroundCompiles::submit(std::function<void()> job) {
  std::lock_guard<std::mutex> lock(mutex_);
  jobs_.push_back(std::move(job));
  ensureStarted(/*registerAtExit=*/true);
  changed_.notify_all();
}

void BackgroundCompiles::afterForkInChild() {
  // mutex_ is held (locked by this thread before the fork).
  abandoned_.insert(abandoned_.end(), std::make_move_iterator(jobs_.begin()),
                    std::make_move_iterator(jobs_.end()));
  jobs_.clear();
  // The parent's thread: not in this process, never joined (destroying a joinable std::thread
  // terminates). Kept reachable, so that LeakSanitizer does not report the child's exit.
  orphanedWorkers_.push_back(worker_.release());
  started_ = false;
  running_ = false;
  workerDone_ = false;
  foreground_ = foregroundDepth;
  speculative_ = 0;
  mainThreadArmed_ = mainThreadExit.armed; // this thread is the child's main thread
  mutex_.unlock();
}

bool BackgroundCompiles::exiting() {
  std::lock_guard<std::mutex> lock(mutex_);
  return exiting_;
}

void BackgroundCompiles::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // At exit it returns once no compile in flight can queue another job (or the drain gave
    // up waiting for them).
    changed_.wait(lock, [this] {
      return (!jobs_.empty() && (exiting_ || (!held_ && foreground_ == 0))) ||
             (exiting_ && jobs_.empty() &&
              (quit_ || (foreground_ <= exitDepth_ && speculative_ == 0)));
    });
    if (jobs_.empty()) { // exiting
      workerDone_ = true;
      changed_.notify_all();
      return;
    }
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    running_ = true;
    lock.unlock();
    try {
      job();
    } catch (const std::exception &error) {
      log(LogLevel::Warning, std::string("background compile failed (the quick code stays): ") +
                                 error.what());
    } catch (...) {
      log(LogLevel::Warning, "background compile failed (the quick code stays)");
    }
    job = nullptr;
    lock.lock();
    running_ = false;
    finished_.fetch_add(1, std::memory_order_release);
    changed_.notify_all();
  }
}

void BackgroundCompiles::waitIdle() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return jobs_.empty() && !running_; });
}

void BackgroundCompiles::hold(bool held) {
  std::lock_guard<std::mutex> lock(mutex_);
  held_ = held;
  changed_.notify_all();
}

void BackgroundCompiles::ensureStarted(bool registerAtExit) {
  if (!mainThreadArmed_ && onMainThread()) {
    mainThreadArmed_ = true;
    mainThreadExit.armed = true; // first use on this thread: registers its destructor
  }
  if (!forkHandlers_) {
    forkHandlers_ = true;
    // A forked child has only the forking thread: none of the compiles counted here, and no
    // worker (parent handlers keep mutex_ consistent across the fork).
    ::pthread_atfork([] { BackgroundCompiles::instance().mutex_.lock(); },
                     [] { BackgroundCompiles::instance().mutex_.unlock(); },
                     [] { BackgroundCompiles::instance().afterForkInChild(); });
  }
  if (registerAtExit && !exitHandler_) {
    exitHandler_ = true;
    // The fallback for an exit from another thread. Registered after the code generator's
    // warm-up (warmUpHostCodeGeneration), so at least the statics that it constructed outlive it.
    std::atexit([] { BackgroundCompiles::instance().drainAtExit(/*staticsAlive=*/false); });
  }
  if (!started_) {
    started_ = true;
    workerDone_ = false;
    worker_ = std::make_unique<std::thread>([this] { run(); });
  }
}

void BackgroundCompiles::drainAtExit(bool staticsAlive) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (drained_)
    return;
  drained_ = true;
  exiting_ = true;
  if (!staticsAlive && !jobs_.empty()) {
    // Statics first used after the atexit registration are gone: running the queued jobs
    // would read them. They are left unrun and never destroyed (their LLVM modules and key
    // locks go with the process; another process compiles those keys).
    abandoned_.insert(abandoned_.end(), std::make_move_iterator(jobs_.begin()),
                      std::make_move_iterator(jobs_.end()));
    jobs_.clear();
  }
  changed_.notify_all();
  // Compiles on other threads (and speculative threads, at nice +5: seconds on a loaded
  // machine) finish first: exiting under them destroys LLVM's statics while they run (a crash at
  // exit). The bound only guards against a hang. Those of this very thread (exit() from inside
  // a compile, an LLVM fatal error) are not waited for.
  const int mine = foregroundDepth;
  exitDepth_ = mine;
  const bool self = started_ && worker_->get_id() == std::this_thread::get_id();
  changed_.notify_all();
  const bool finished = changed_.wait_for(lock, std::chrono::minutes(2), [this, mine, self] {
    return foreground_ <= mine && speculative_ == 0 && (!started_ || self || workerDone_);
  });
  if (!finished) {
    quit_ = true; // the worker stops after its current job; it is not waited for
    changed_.notify_all();
  }
  const bool joinable = started_ && worker_->joinable() && !self && workerDone_;
  lock.unlock();
  if (joinable)
    worker_->join();
}

BackgroundCompiles::Foreground::Foreground() {
  BackgroundCompiles &compiles = instance();
  std::lock_guard<std::mutex> lock(compiles.mutex_);
  ++foregroundDepth;
  ++compiles.foreground_;
  // The atexit fallback waits for the code generator's warm-up (warmUpCodeGeneration).
  compiles.ensureStarted(/*registerAtExit=*/false);
}

void BackgroundCompiles::warmUpCodeGeneration() {
  warmUpHostCodeGeneration();
  std::lock_guard<std::mutex> lock(mutex_);
  ensureStarted(/*registerAtExit=*/true);
}

BackgroundCompiles::Foreground::~Foreground() {
  BackgroundCompiles &compiles = instance();
  std::lock_guard<std::mutex> lock(compiles.mutex_);
  --foregroundDepth;
  --compiles.foreground_;
  compiles.changed_.notify_all();
}

} // namespace attn::runtime

namespace attn::runtime {
void lowerThreadPriority(int niceIncrement) {
#if defined(__linux__)
  const auto thread = static_cast<id_t>(::syscall(SYS_gettid));
  errno = 0;
  const int current = ::getpriority(PRIO_PROCESS, thread);
  if (errno == 0)
    (void)::setpriority(PRIO_PROCESS, thread, current + niceIncrement);
#else
  (void)niceIncrement;
#endif
}
BackgroundCompiles::Speculation::Speculation() {
  // On the main thread its thread_local's drain covers exit, and the code generator's warm-up
  // waits for a compile (speculative backward kernels that are all disk hits never pay it).
  // Elsewhere the atexit fallback registers, after the warm-up.
  const bool mainThread = onMainThread();
  if (!mainThread)
    warmUpHostCodeGeneration();
  BackgroundCompiles &compiles = instance();
  std::lock_guard<std::mutex> lock(compiles.mutex_);
  ++compiles.speculative_;
  compiles.ensureStarted(/*registerAtExit=*/!mainThread);
}

BackgroundCompiles::Speculation::~Speculation() {
  BackgroundCompiles &compiles = instance();
  std::lock_guard<std::mutex> lock(compiles.mutex_);
  --compiles.speculative_;
  compiles.changed_.notify_all();
}
} // namespace attn::runtime
