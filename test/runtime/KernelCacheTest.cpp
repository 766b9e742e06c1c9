// The disk cache on its own: entries round-trip, damaged entries are detected and removed,
// an unwritable directory degrades to "no disk cache", and the per-key lock excludes.
#include "runtime/KernelCache.h"
#include "test/runtime/ProcessRunner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <algorithm>
#include <sys/time.h>
#include <unistd.h>

namespace attn::runtime {
namespace {
const std::string kKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

std::string readBytes(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(KernelCache, StoredEntryLoadsBackExactly) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path() + "/nested/cache");
  std::string payload("object\0code with a NUL and \xff bytes", 35);
  ASSERT_TRUE(cache.store(kKey, payload));
  std::optional<std::string> loaded = cache.load(kKey);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(*loaded, payload);
  EXPECT_EQ(readBytes(cache.entryPath(kKey)).size(), KernelCache::kHeaderBytes + payload.size());
}

TEST(KernelCache, MissingEntryIsAMiss) {
  test::TemporaryDirectory directory;
  EXPECT_FALSE(KernelCache(directory.path()).load(kKey).has_value());
}

TEST(KernelCache, StoreLeavesNoTemporaryFiles) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  ASSERT_TRUE(cache.store(kKey, "first"));
  ASSERT_TRUE(cache.store(kKey, "second replaces it"));
  EXPECT_EQ(directory.list(), std::vector<std::string>{kKey + ".kernel"});
  EXPECT_EQ(*cache.load(kKey), "second replaces it");
}

TEST(KernelCache, StaleTemporaryOfAKilledWriterIsRemovedOnTheNextStore) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  const std::string stale = directory.path() + "/." + kKey + ".tmp.AbC123";
  const std::string live = directory.path() + "/." + kKey + ".tmp.XyZ789";
  writeBytes(stale, "half an entry");
  writeBytes(live, "a writer still at work");
  const struct timeval hourAgo[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimes(stale.c_str(), hourAgo), 0);
  ASSERT_TRUE(cache.store(kKey, "whole"));
  std::vector<std::string> files = directory.list();
  EXPECT_EQ(std::count(files.begin(), files.end(), "." + kKey + ".tmp.AbC123"), 0);
  EXPECT_EQ(std::count(files.begin(), files.end(), "." + kKey + ".tmp.XyZ789"), 1);
  EXPECT_EQ(*cache.load(kKey), "whole");
}

TEST(KernelCache, TruncatedEntryIsDetectedAndRemoved) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  ASSERT_TRUE(cache.store(kKey, std::string(1000, 'x')));
  std::string bytes = readBytes(cache.entryPath(kKey));
  writeBytes(cache.entryPath(kKey), bytes.substr(0, bytes.size() - 10));
  EXPECT_FALSE(cache.load(kKey).has_value());
  EXPECT_NE(access(cache.entryPath(kKey).c_str(), F_OK), 0) << "the corrupt entry stays";
}

TEST(KernelCache, EntryTruncatedInsideItsHeaderIsDetected) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  ASSERT_TRUE(cache.store(kKey, "payload"));
  writeBytes(cache.entryPath(kKey), readBytes(cache.entryPath(kKey)).substr(0, 20));
  EXPECT_FALSE(cache.load(kKey).has_value());
}

TEST(KernelCache, FlippedPayloadByteFailsTheChecksum) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  ASSERT_TRUE(cache.store(kKey, std::string(64, 'a')));
  std::string bytes = readBytes(cache.entryPath(kKey));
  bytes[KernelCache::kHeaderBytes + 7] = 'b';
  writeBytes(cache.entryPath(kKey), bytes);
  EXPECT_FALSE(cache.load(kKey).has_value());
}

TEST(KernelCache, ForeignFileIsNotAnEntry) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  writeBytes(cache.entryPath(kKey), std::string(200, 'z'));
  EXPECT_FALSE(cache.load(kKey).has_value());
}

TEST(KernelCache, UncreatableDirectoryDisablesStores) {
  test::TemporaryDirectory directory;
  writeBytes(directory.path() + "/a-file", "not a directory");
  KernelCache cache(directory.path() + "/a-file/cache");
  EXPECT_FALSE(cache.store(kKey, "payload"));
  EXPECT_FALSE(cache.load(kKey).has_value());
  EXPECT_FALSE(cache.lock(kKey).held());
}

TEST(KernelCache, EmptyDirectoryMeansDisabled) {
  KernelCache cache("");
  EXPECT_FALSE(cache.enabled());
  EXPECT_FALSE(cache.store(kKey, "payload"));
}

TEST(KernelCache, KeyLockExcludesASecondHolder) {
  test::TemporaryDirectory directory;
  KernelCache cache(directory.path());
  std::atomic<bool> firstReleased{false};
  KernelCache::KeyLock first = cache.lock(kKey);
  ASSERT_TRUE(first.held());
  std::thread second([&] {
    KernelCache::KeyLock lock = cache.lock(kKey); // a second open file: flock conflicts
    EXPECT_TRUE(firstReleased.load()) << "the second holder got the lock while the first held it";
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  firstReleased = true;
  first = KernelCache::KeyLock();
  second.join();
}
} // namespace
} // namespace attn::runtime
