// The persistent kernel cache: one file per key in a directory, written to a temporary file,
// fsynced and renamed into place, so a reader sees a whole entry or none. Every entry carries
// its payload's size and SHA-256; a corrupt or truncated entry is reported once, removed and
// treated as a miss. Free of MLIR and torch types.
#ifndef RUNTIME_KERNELCACHE_H
#define RUNTIME_KERNELCACHE_H

#include <optional>
#include <string>
#include <string_view>

namespace attn::runtime {

class KernelCache {
public:
  /// An empty directory disables the cache. The directory is created on first store.
  explicit KernelCache(std::string directory);

  bool enabled() const { return !directory_.empty(); }
  const std::string &directory() const { return directory_; }
  std::string entryPath(const std::string &key) const;

  /// The payload stored under `key`, or nullopt when absent or corrupt.
  std::optional<std::string> load(const std::string &key) const;
  /// Stores atomically. False when the directory cannot be written (warned once per process;
  /// the caller keeps the kernel in memory only).
  bool store(const std::string &key, std::string_view payload) const;

  /// Holds an exclusive advisory lock on one key across processes (flock on `<key>.lock`),
  /// so that processes racing on an empty cache compile a key once. Without a writable
  /// directory the lock is a no-op. A forked child closes its copies of the held locks' file
  /// descriptors at once (a flock belongs to the open file, so a long-lived child, a data
  /// loader worker say, would otherwise hold the key after the parent released it); a lock
  /// object copied into the child then releases nothing.
  class KeyLock {
  public:
    KeyLock() = default;
    /// Takes a descriptor that lock() opened and registered for the fork handler.
    explicit KeyLock(int fd);
    KeyLock(KeyLock &&other) noexcept : fd_(other.fd_), owner_(other.owner_) { other.fd_ = -1; }
    KeyLock &operator=(KeyLock &&other) noexcept;
    KeyLock(const KeyLock &) = delete;
    KeyLock &operator=(const KeyLock &) = delete;
    ~KeyLock();
    bool held() const { return fd_ >= 0; }

  private:
    void release();
    int fd_ = -1;
    int owner_ = -1; ///< the process that opened fd_
  };
  KeyLock lock(const std::string &key) const;

  /// Bytes before the payload in an entry file: magic, payload size, payload SHA-256.
  static constexpr size_t kHeaderBytes = 8 + 8 + 64;

private:
  bool ensureDirectory() const;
  std::string directory_;
};

} // namespace attn::runtime

#endif // RUNTIME_KERNELCACHE_H
