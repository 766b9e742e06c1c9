#include "runtime/KernelCache.h"

#include "runtime/ContentHash.h"
#include "runtime/Log.h"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <mutex>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_set>

namespace attn::runtime {
namespace {
constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'K', 'C', '0', '1'};

std::string errnoText() { return std::strerror(errno); }

bool writeAll(int fd, const char *data, size_t size) {
  while (size > 0) {
    ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

std::optional<std::string> readFile(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return std::nullopt;
  std::string bytes;
  char buffer[1 << 16];
  while (true) {
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;
    bytes.append(buffer, static_cast<size_t>(got));
  }
  ::close(fd);
  return bytes;
}

/// mkdir -p with 0755 directories.
bool makeDirectories(const std::string &path) {
  if (path.empty())
    return false;
  struct stat info;
  if (::stat(path.c_str(), &info) == 0)
    return S_ISDIR(info.st_mode);
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0 && !makeDirectories(path.substr(0, slash)))
    return false;
  return ::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST;
}

/// Test hook: ATTN_TEST_CACHE_WRITE_DELAY_MS=N sleeps N ms halfway through writing an entry's
/// temporary file, so that test/runtime/CacheKillTest.cpp can SIGKILL a writer mid-entry. Unset
/// (always, outside that test) it costs one getenv per store.
void testOnlyWriteDelay() {
  if (const char *delay = std::getenv("ATTN_TEST_CACHE_WRITE_DELAY_MS"))
    ::usleep(static_cast<useconds_t>(std::atoi(delay)) * 1000);
}

/// A writer killed between mkstemp and rename leaves `.KEY.tmp.XXXXXX` behind; it is never
/// read, but nothing else would remove it. After storing KEY, its temporaries older than ten
/// minutes are removed (a live writer of the same key finishes in seconds).
void removeStaleTemporaries(const std::string &directory, const std::string &key) {
  DIR *listing = ::opendir(directory.c_str());
  if (!listing)
    return;
  const std::string prefix = "." + key + ".tmp.";
  const time_t cutoff = std::time(nullptr) - 600;
  while (const dirent *entry = ::readdir(listing)) {
    if (std::strncmp(entry->d_name, prefix.c_str(), prefix.size()) != 0)
      continue;
    const std::string path = directory + "/" + entry->d_name;
    struct stat status;
    if (::stat(path.c_str(), &status) == 0 && status.st_mtime < cutoff) {
      ::unlink(path.c_str());
      log(LogLevel::Info, "removed a stale kernel cache temporary " + path);
    }
  }
  ::closedir(listing);
}

void warnNotWritable(const std::string &directory, const std::string &why) {
  logOnce(LogLevel::Warning, "cache-not-writable:" + directory,
          "kernel cache directory '" + directory + "' is not writable (" + why +
              "); compiled kernels stay in memory only. Set ATTN_CACHE_DIR to a writable "
              "directory or ATTN_CACHE_DISABLE=1 to silence this.");
}
} // namespace

KernelCache::KernelCache(std::string directory) : directory_(std::move(directory)) {
  while (directory_.size() > 1 && directory_.back() == '/')
    directory_.pop_back();
}

std::string KernelCache::entryPath(const std::string &key) const {
  return directory_ + "/" + key + ".kernel";
}

std::optional<std::string> KernelCache::load(const std::string &key) const {
  if (!enabled())
    return std::nullopt;
  const std::string path = entryPath(key);
  std::optional<std::string> bytes = readFile(path);
  if (!bytes)
    return std::nullopt;

  std::string problem;
  uint64_t size = 0;
  if (bytes->size() < kHeaderBytes) {
    problem = "shorter than its header (" + std::to_string(bytes->size()) + " bytes)";
  } else if (std::memcmp(bytes->data(), kMagic, sizeof kMagic) != 0) {
    problem = "not a kernel cache entry (bad magic)";
  } else {
    std::memcpy(&size, bytes->data() + 8, sizeof size);
    if (size != bytes->size() - kHeaderBytes)
      problem = "truncated: header says " + std::to_string(size) + " payload bytes, file has " +
                std::to_string(bytes->size() - kHeaderBytes);
    else if (bytes->compare(16, 64, sha256Hex(std::string_view(*bytes).substr(kHeaderBytes))) != 0)
      problem = "checksum mismatch";
  }
  if (!problem.empty()) {
    logOnce(LogLevel::Warning, "corrupt:" + path,
            "kernel cache entry '" + path + "' is corrupt (" + problem +
                "); removing it and recompiling");
    ::unlink(path.c_str());
    return std::nullopt;
  }
  return bytes->substr(kHeaderBytes);
}

bool KernelCache::ensureDirectory() const {
  if (makeDirectories(directory_))
    return true;
  warnNotWritable(directory_, "cannot create it: " + errnoText());
  return false;
}

bool KernelCache::store(const std::string &key, std::string_view payload) const {
  if (!enabled() || !ensureDirectory())
    return false;
  std::string temporary = directory_ + "/." + key + ".tmp.XXXXXX";
  int fd = ::mkstemp(temporary.data());
  if (fd < 0) {
    warnNotWritable(directory_, errnoText());
    return false;
  }
  char header[kHeaderBytes];
  std::memcpy(header, kMagic, sizeof kMagic);
  uint64_t size = payload.size();
  std::memcpy(header + 8, &size, sizeof size);
  std::string checksum = sha256Hex(payload);
  std::memcpy(header + 16, checksum.data(), 64);
  const size_t half = payload.size() / 2;
  bool ok = ::fchmod(fd, 0644) == 0 && writeAll(fd, header, sizeof header) &&
            writeAll(fd, payload.data(), half) && (testOnlyWriteDelay(), true) &&
            writeAll(fd, payload.data() + half, payload.size() - half) && ::fsync(fd) == 0;
  std::string why = ok ? "" : errnoText();
  ok = (::close(fd) == 0) && ok;
  // rename() is atomic: readers see the old entry, nothing, or this whole one.
  if (ok && ::rename(temporary.c_str(), entryPath(key).c_str()) != 0) {
    ok = false;
    why = errnoText();
  }
  if (!ok) {
    ::unlink(temporary.c_str());
    warnNotWritable(directory_, why);
    return false;
  }
  // Persist the rename itself.
  int directoryFd = ::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directoryFd >= 0) {
    ::fsync(directoryFd);
    ::close(directoryFd);
  }
  log(LogLevel::Debug, "stored kernel cache entry " + entryPath(key));
  removeStaleTemporaries(directory_, key);
  return true;
}

namespace {
/// The descriptors of the key locks this process holds, for the fork child handler.
std::mutex heldLocksMutex;
std::unordered_set<int> &heldLocks() {
  static auto *held = new std::unordered_set<int>; // leaked: used up to process exit
  return *held;
}

void closeHeldLocksInChild() {
  for (int fd : heldLocks())
    ::close(fd);
  heldLocks().clear();
  heldLocksMutex.unlock(); // locked by the prepare handler on this (the forking) thread
}

/// Opens a key's lock file and registers the descriptor in one step under the mutex that the
/// fork handlers take: no fork can copy it unregistered.
int openRegistered(const std::string &path) {
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork([] { heldLocksMutex.lock(); }, [] { heldLocksMutex.unlock(); },
                     closeHeldLocksInChild);
  });
  std::lock_guard<std::mutex> lock(heldLocksMutex);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0)
    heldLocks().insert(fd);
  return fd;
}
} // namespace

KernelCache::KeyLock::KeyLock(int fd) : fd_(fd), owner_(static_cast<int>(::getpid())) {}

void KernelCache::KeyLock::release() {
  if (fd_ < 0)
    return;
  // In a forked child the descriptor was closed by the fork handler (the number may be reused).
  if (owner_ == static_cast<int>(::getpid())) {
    std::lock_guard<std::mutex> lock(heldLocksMutex);
    heldLocks().erase(fd_);
    ::close(fd_); // closing releases the flock
  }
  fd_ = -1;
}

KernelCache::KeyLock &KernelCache::KeyLock::operator=(KeyLock &&other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    owner_ = other.owner_;
    other.fd_ = -1;
  }
  return *this;
}

KernelCache::KeyLock::~KeyLock() { release(); }

KernelCache::KeyLock KernelCache::lock(const std::string &key) const {
  if (!enabled() || !makeDirectories(directory_))
    return KeyLock();
  std::string path = directory_ + "/" + key + ".lock";
  // Registered before flock: a fork while it waits closes the child's copy.
  const int fd = openRegistered(path);
  if (fd < 0)
    return KeyLock();
  KeyLock held(fd);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR)
      return KeyLock(); // `held` closes the file
  }
  return held;
}
} // namespace attn::runtime
