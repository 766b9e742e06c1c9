// Four processes share one kernel cache directory; one of them is SIGKILLed halfway through
// writing a cache entry (KernelCache's test hook ATTN_TEST_CACHE_WRITE_DELAY_MS holds it there).
// The survivors must compute right results, compile each key once between them, never read the
// half-written file, and every entry left on disk must load and verify (size + SHA-256).
#include "runtime/KernelCache.h"
#include "test/runtime/ProcessRunner.h"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <sys/stat.h>
#include <thread>

namespace attn::runtime {
namespace {
test::ProcessSpec probe(const std::string &directory, std::map<std::string, std::string> extra) {
  test::ProcessSpec spec;
  // Two keys: the victim dies writing the first; the survivors race on both.
  spec.argv = {ATTN_CACHE_PROBE, "--variant=sigmoid(bias=-1.875)",
               "--variant=relu(scale=0.0859375)", "--head-dim=24", "--causal"};
  spec.environment = std::move(extra);
  spec.environment["ATTN_CACHE_DIR"] = directory;
  spec.environment.emplace("ATTN_CACHE_DISABLE", "0");
  spec.environment.emplace("ATTN_DUMP_DIR", "");
  spec.environment.emplace("ATTN_LOG", "info");
  // The counts below are of the kernels the probe asks for, not of a speculative backward.
  spec.environment.emplace("ATTN_SPECULATE_BACKWARD", "0");
  return spec;
}

bool endsWith(const std::string &name, const std::string &suffix) {
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The name of a temporary entry file holding more than its header (the writer is past the
/// first half of the payload), or empty.
std::string halfWrittenTemporary(const test::TemporaryDirectory &directory) {
  for (const std::string &name : directory.list()) {
    if (name.find(".tmp.") == std::string::npos)
      continue;
    struct stat info;
    if (stat((directory.path() + "/" + name).c_str(), &info) == 0 &&
        static_cast<size_t>(info.st_size) > KernelCache::kHeaderBytes)
      return name;
  }
  return {};
}

int count(const std::string &text, const std::string &needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
    ++n;
  return n;
}

TEST(CacheKill, WriterKilledMidEntryLeavesNoCorruptEntryAndSurvivorsAreRight) {
  test::TemporaryDirectory directory;
  // The victim compiles the first key and stops halfway through its entry for up to 60 s.
  test::ChildProcess victim(probe(directory.path(), {{"ATTN_TEST_CACHE_WRITE_DELAY_MS", "60000"}}));
  std::string temporary;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while ((temporary = halfWrittenTemporary(directory)).empty() &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_FALSE(temporary.empty()) << "the victim never started writing an entry";
  std::string key = temporary.substr(1, temporary.find(".tmp.") - 1);

  // Three survivors start while the victim holds the key's lock, mid-write; then it dies.
  std::vector<std::unique_ptr<test::ChildProcess>> survivors;
  for (int i = 0; i < 3; ++i)
    survivors.push_back(std::make_unique<test::ChildProcess>(probe(directory.path(), {})));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(halfWrittenTemporary(directory) == temporary) << "the victim went on writing";
  victim.kill(SIGKILL);
  test::ProcessResult killed = victim.wait();
  EXPECT_EQ(killed.exitCode, 128 + SIGKILL) << killed.err;

  int compiles = 0, hits = 0;
  for (auto &survivor : survivors) {
    test::ProcessResult result = survivor->wait();
    ASSERT_EQ(result.exitCode, 0) << result.out << result.err;
    test::ProbeCounts counts = test::parseProbe(result);
    EXPECT_TRUE(counts.outputOk) << result.out << result.err;
    EXPECT_EQ(count(result.err, "is corrupt"), 0) << "a survivor read a broken entry:\n"
                                                  << result.err;
    compiles += counts.compiles;
    hits += counts.diskHits;
  }
  // Per key: one survivor compiles (the dead writer's entry never appeared), two read it.
  EXPECT_EQ(compiles, 2);
  EXPECT_EQ(hits, 4);

  // Every entry on disk loads and verifies; the dead writer's temporary file is never an entry.
  KernelCache cache(directory.path());
  int entries = 0;
  bool sawKilledKey = false;
  for (const std::string &name : directory.list()) {
    if (!endsWith(name, ".kernel"))
      continue;
    ++entries;
    std::string entryKey = name.substr(0, name.size() - 7);
    sawKilledKey = sawKilledKey || entryKey == key;
    EXPECT_TRUE(cache.load(entryKey).has_value()) << name << " does not load and verify";
  }
  EXPECT_EQ(entries, 2);
  EXPECT_TRUE(sawKilledKey) << "the key the victim died writing was not stored by a survivor";
  for (const std::string &name : directory.list()) {
    if (name.find(".tmp.") != std::string::npos) {
      EXPECT_EQ(name, temporary) << "a survivor left a temporary file";
    }
  }

  // A fifth process reads both entries and runs them.
  test::ProcessResult after = test::run(probe(directory.path(), {}));
  ASSERT_EQ(after.exitCode, 0) << after.err;
  test::ProbeCounts counts = test::parseProbe(after);
  EXPECT_EQ(counts.compiles, 0) << after.err;
  EXPECT_EQ(counts.diskHits, 2);
  EXPECT_TRUE(counts.outputOk);
}

TEST(CacheKill, WriteDelayHookWithoutAKillStillWritesAWholeEntry) {
  // The hook only delays: a writer that is not killed completes a valid entry.
  test::TemporaryDirectory directory;
  test::ProcessResult result =
      test::run(probe(directory.path(), {{"ATTN_TEST_CACHE_WRITE_DELAY_MS", "50"}}));
  ASSERT_EQ(result.exitCode, 0) << result.err;
  EXPECT_EQ(test::parseProbe(result).compiles, 2);
  KernelCache cache(directory.path());
  int entries = 0;
  for (const std::string &name : directory.list()) {
    EXPECT_EQ(name.find(".tmp."), std::string::npos) << name;
    if (endsWith(name, ".kernel")) {
      ++entries;
      EXPECT_TRUE(cache.load(name.substr(0, name.size() - 7)).has_value()) << name;
    }
  }
  EXPECT_EQ(entries, 2);
}
} // namespace
} // namespace attn::runtime
