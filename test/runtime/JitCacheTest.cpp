// runtime::Jit end to end: compile once per key across threads and processes, hits after a
// restart, recovery from a damaged entry, a read-only cache, and the environment switches.
#include "runtime/CpuKernels.h"
#include "runtime/Jit.h"
#include "runtime/TieredObject.h"
#include "test/runtime/ProcessRunner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <csignal>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace attn::runtime {
namespace {
test::ProcessSpec probe(const std::string &cacheDirectory, std::vector<std::string> arguments,
                        std::map<std::string, std::string> environment = {}) {
  test::ProcessSpec spec;
  spec.argv = {ATTN_CACHE_PROBE};
  spec.argv.insert(spec.argv.end(), arguments.begin(), arguments.end());
  spec.environment = std::move(environment);
  spec.environment["ATTN_CACHE_DIR"] = cacheDirectory;
  spec.environment.emplace("ATTN_CACHE_DISABLE", "0");
  spec.environment.emplace("ATTN_DUMP_DIR", "");
  // The counts below are of the forward alone (the probe never runs the backward).
  spec.environment.emplace("ATTN_SPECULATE_BACKWARD", "0");
  return spec;
}

std::vector<std::string> entries(const test::TemporaryDirectory &directory, const char *suffix) {
  std::vector<std::string> found;
  for (const std::string &name : directory.list())
    if (name.size() >= strlen(suffix) &&
        name.compare(name.size() - strlen(suffix), strlen(suffix), suffix) == 0)
      found.push_back(name);
  return found;
}

int count(const std::string &text, const std::string &needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
    ++n;
  return n;
}

/// In-process tests use their own cache directory and distinct variants: the memory cache
/// lives as long as the test binary.
class JitInProcess : public ::testing::Test {
protected:
  void SetUp() override {
    setenv("ATTN_CACHE_DIR", directory.path().c_str(), 1);
    unsetenv("ATTN_CACHE_DISABLE");
    unsetenv("ATTN_DUMP_DIR");
    // Counts of the forward alone; SpeculativeBackwardCompilesEachKernelOnce turns it on.
    setenv("ATTN_SPECULATE_BACKWARD", "0", 1);
    // The tiered JIT (the default; set in case the environment turns it off).
    setenv("ATTN_TIERED_COMPILE", "1", 1);
    Jit::instance().reconfigureFromEnvironment();
  }
  void TearDown() override {
    Jit::instance().waitForBackgroundCompiles();
    unsetenv("ATTN_SPECULATE_BACKWARD");
    unsetenv("ATTN_TIERED_COMPILE");
    unsetenv("ATTN_CACHE_DIR");
    Jit::instance().reconfigureFromEnvironment();
  }
  test::TemporaryDirectory directory;
};

TEST_F(JitInProcess, SixteenThreadsAskingForOneKeyCompileOnce) {
  VariantSpec spec;
  spec.variant = "relu(scale=0.0371)";
  spec.headDim = spec.valueHeadDim = 32;
  JitStatistics before = Jit::instance().statistics();
  std::vector<std::shared_ptr<const CpuKernels>> results(16);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i)
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < 16) {
      }
      results[i] = getCpuKernels(spec);
    });
  for (std::thread &thread : threads)
    thread.join();
  JitStatistics after = Jit::instance().statistics();
  EXPECT_EQ(after.compiles - before.compiles, 1u);
  EXPECT_EQ(after.diskHits - before.diskHits, 0u);
  for (const auto &result : results)
    EXPECT_EQ(result.get(), results.front().get()) << "threads got different kernels";
  Jit::instance().waitForBackgroundCompiles(); // the optimized tier is what is stored
  EXPECT_EQ(entries(directory, ".kernel").size(), 1u);
  getCpuKernels(spec);
  EXPECT_GE(Jit::instance().statistics().memoryHits - after.memoryHits, 1u);
}

TEST_F(JitInProcess, BackwardCompilesOnFirstUseOnceAcrossThreads) {
  // The forward is an artifact of its own; dQ and dK/dV follow on the first backward use,
  // once however many threads ask at the same moment.
  // (With speculation off, as in every test of this fixture but one: by default the backward
  // compiles beside the forward.)
  VariantSpec spec;
  spec.variant = "relu(scale=0.0417)";
  spec.headDim = spec.valueHeadDim = 16;
  JitStatistics before = Jit::instance().statistics();
  std::shared_ptr<const CpuKernels> kernels = getCpuKernels(spec);
  EXPECT_EQ(Jit::instance().statistics().compiles - before.compiles, 1u) << "forward only";
  Jit::instance().waitForBackgroundCompiles(); // the optimized tier is what is stored
  EXPECT_EQ(entries(directory, ".kernel").size(), 1u);

  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < 8) {
      }
      kernels->prepareBackward();
    });
  for (std::thread &thread : threads)
    thread.join();
  EXPECT_EQ(Jit::instance().statistics().compiles - before.compiles, 3u)
      << "the backward is two artifacts, compiled once";
  Jit::instance().waitForBackgroundCompiles();
  EXPECT_EQ(entries(directory, ".kernel").size(), 3u);
  kernels->prepareBackward();
  EXPECT_EQ(Jit::instance().statistics().compiles - before.compiles, 3u);

  // A new process: all three from the disk, the backward still only when asked for.
  test::ProcessResult second =
      test::run(probe(directory.path(), {"--variant=relu(scale=0.0417)", "--head-dim=16"},
                      {{"ATTN_SPECULATE_BACKWARD", "0"}}));
  ASSERT_EQ(second.exitCode, 0) << second.err;
  test::ProbeCounts warm = test::parseProbe(second);
  EXPECT_EQ(warm.compiles, 0);
  EXPECT_EQ(warm.diskHits, 1);
}

TEST_F(JitInProcess, SpeculativeBackwardCompilesEachKernelOnce) {
  // The backward compiles beside the forward; a backward asked for at once waits for those
  // compiles instead of starting its own.
  setenv("ATTN_SPECULATE_BACKWARD", "1", 1);
  Jit::instance().reconfigureFromEnvironment();
  VariantSpec spec;
  spec.variant = "relu(scale=0.0419)";
  spec.headDim = spec.valueHeadDim = 16;
  JitStatistics before = Jit::instance().statistics();
  std::shared_ptr<const CpuKernels> kernels = getCpuKernels(spec);
  kernels->prepareBackward();
  EXPECT_EQ(Jit::instance().statistics().compiles - before.compiles, 3u);
  Jit::instance().waitForBackgroundCompiles();
  EXPECT_EQ(entries(directory, ".kernel").size(), 3u);
}

/// Runs the forward, dQ and dK/dV tiles of one small problem; returns every output.
std::vector<float> runAllKernels(const CpuKernels &kernels, int64_t length, int64_t dim) {
  const int64_t heads = 2;
  auto fill = [](std::vector<float> &data, uint32_t seed) {
    for (float &value : data) {
      seed = seed * 1664525u + 1013904223u;
      value = static_cast<float>(seed >> 8) / 16777216.0f - 0.5f;
    }
  };
  std::vector<float> q(heads * length * dim), k(q.size()), v(q.size()), dout(q.size());
  fill(q, 1), fill(k, 2), fill(v, 3), fill(dout, 4);
  std::vector<float> o(q.size(), NAN), dq(q.size(), NAN), dk(q.size(), NAN), dv(q.size(), NAN);
  std::vector<float> lse(heads * length, NAN), delta(heads * length, 0.25f);
  auto view4 = [&](std::vector<float> &data) {
    View4 view;
    view.data = data.data();
    const int64_t sizes[4] = {1, heads, length, dim};
    const int64_t strides[4] = {heads * length * dim, length * dim, dim, 1};
    std::copy(sizes, sizes + 4, view.sizes);
    std::copy(strides, strides + 4, view.strides);
    return view;
  };
  auto view3 = [&](std::vector<float> &data) {
    View3 view;
    view.data = data.data();
    const int64_t sizes[3] = {1, heads, length}, strides[3] = {heads * length, length, 1};
    std::copy(sizes, sizes + 3, view.sizes);
    std::copy(strides, strides + 3, view.strides);
    return view;
  };
  for (int64_t head = 0; head < heads; ++head)
    for (int64_t start = 0; start < length; start += kernels.queryTile())
      kernels.forwardTile(view4(q), view4(k), view4(v), view4(o), view3(lse), 0, head, start);
  for (int64_t head = 0; head < heads; ++head) {
    for (int64_t start = 0; start < length; start += kernels.queryTile())
      kernels.backwardQueryTile(view4(q), view4(k), view4(v), view4(dout), view3(lse),
                                view3(delta), view4(dq), 0, head, start);
    for (int64_t start = 0; start < length; start += kernels.keyTile())
      kernels.backwardKeyTile(view4(q), view4(k), view4(v), view4(dout), view3(lse),
                              view3(delta), view4(dk), view4(dv), 0, head, start);
  }
  std::vector<float> all = o;
  for (const std::vector<float> *part : {&lse, &dq, &dk, &dv})
    all.insert(all.end(), part->begin(), part->end());
  return all;
}

TEST_F(JitInProcess, OptimizedTierReplacesTheQuickOneUnderRunningCalls) {
  // Kernels start as the quick tier; the optimized objects replace them while four threads
  // keep calling all three kernels. Every call's results are the quick tier's, bit for bit
  // (the same IR, the same arithmetic), before, during and after the switch.
  BackgroundCompiles::instance().hold(true);
  VariantSpec spec;
  spec.variant = "softmax";
  spec.headDim = spec.valueHeadDim = 32;
  spec.scale = 0.1729;
  JitStatistics before = Jit::instance().statistics();
  std::shared_ptr<const CpuKernels> kernels = getCpuKernels(spec);
  kernels->prepareBackward();
  const JitStatistics quick = Jit::instance().statistics();
  ASSERT_EQ(quick.quickObjects - before.quickObjects, 3u) << "tiering is on (ATTN_TIERED_COMPILE=1)";
  ASSERT_EQ(quick.optimizedLater, before.optimizedLater) << "held: nothing optimized yet";
  const int64_t length = 300, dim = 32; // odd length: the tails too
  const std::vector<float> reference = runAllKernels(*kernels, length, dim);
  for (float value : reference)
    ASSERT_TRUE(std::isfinite(value));

  std::atomic<bool> stop{false};
  std::atomic<int> mismatches{0}, calls{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      while (!stop.load()) {
        if (runAllKernels(*kernels, length, dim) != reference)
          mismatches.fetch_add(1);
        calls.fetch_add(1);
      }
    });
  while (calls.load() < 4) {
  }
  BackgroundCompiles::instance().hold(false);
  Jit::instance().waitForBackgroundCompiles();
  const int switched = calls.load();
  while (calls.load() < switched + 8) {
  }
  stop = true;
  for (std::thread &thread : threads)
    thread.join();
  EXPECT_EQ(Jit::instance().statistics().optimizedLater - before.optimizedLater, 3u);
  EXPECT_EQ(mismatches.load(), 0) << "of " << calls.load() << " runs";
  EXPECT_EQ(runAllKernels(*kernels, length, dim), reference) << "the optimized tier";
  EXPECT_EQ(entries(directory, ".kernel").size(), 3u) << "only optimized objects are stored";
}

// A fork (a data loader's workers, say) while the optimized tier is queued: the key's lock
// is held until that tier is stored, and a flock belongs to the open file, which the child
// shares. The child must close its copy at once (else another process waits for the key as
// long as the child lives), and its exit() must not wait for the parent's compiles or worker.
TEST_F(JitInProcess, ForkedChildNeitherHoldsTheKeyLockNorWaitsAtExit) {
  VariantSpec spec;
  spec.variant = "sigmoid(bias=-2.125)";
  spec.headDim = spec.valueHeadDim = 16;
  BackgroundCompiles::instance().hold(true);
  std::shared_ptr<const CpuKernels> kernels = getCpuKernels(spec);
  ASSERT_EQ(Jit::instance().statistics().quickObjects > 0, true);
  std::vector<std::string> locks = entries(directory, ".lock");
  ASSERT_EQ(locks.size(), 1u);
  int toChild[2];
  ASSERT_EQ(::pipe(toChild), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    char go;
    (void)!::read(toChild[0], &go, 1);
    std::exit(0); // not _exit: the JIT's exit drain runs in the child
  }
  ASSERT_GT(child, 0);
  BackgroundCompiles::instance().hold(false);
  Jit::instance().waitForBackgroundCompiles(); // stored: the parent released the lock
  const int fd = ::open((directory.path() + "/" + locks.front()).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0) << "the forked child still holds the key's lock";
  ::close(fd);
  (void)!::write(toChild[1], "x", 1);
  ::close(toChild[1]);
  ::close(toChild[0]);
  int status = -1;
  bool ended = false;
  for (int tick = 0; tick < 300 && !ended; ++tick) {
    ended = ::waitpid(child, &status, WNOHANG) == child;
    if (!ended)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!ended) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  EXPECT_TRUE(ended) << "the forked child's exit() waited for the parent's compiles";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(JitInProcess, SpellingsOfOneVariantShareTheDiskEntry) {
  // The custom body canonicalizes to #attn.sigmoid<bias = -2.5>: same canonical IR, same key.
  VariantSpec builtin;
  builtin.variant = "sigmoid(bias=-2.5)";
  builtin.headDim = builtin.valueHeadDim = 16;
  VariantSpec written = builtin;
  written.variant = R"(mlir:
func.func @mine(%q: tensor<?x?x?x16xf32>, %k: tensor<?x?x?x16xf32>,
                %v: tensor<?x?x?x16xf32>) -> tensor<?x?x?x16xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %b = arith.constant -2.5 : f32
    %one = arith.constant 1.0 : f32
    %x = arith.addf %s, %b : f32
    %n = arith.negf %x : f32
    %e = math.exp %n : f32
    %d = arith.addf %one, %e : f32
    %p = arith.divf %one, %d : f32
    attn.yield %p : f32
  }
  return %o : tensor<?x?x?x16xf32>
})";
  JitStatistics before = Jit::instance().statistics();
  getCpuKernels(builtin);
  getCpuKernels(written);
  JitStatistics after = Jit::instance().statistics();
  EXPECT_EQ(after.compiles - before.compiles, 1u);
  EXPECT_EQ(after.diskHits - before.diskHits, 1u);
}

TEST_F(JitInProcess, SizesWrittenInTheIrDoNotChangeTheKey) {
  // B, H and S become dynamic before keying: IR written for one size is the variant of every
  // size, and shares its disk entry with the dynamic spelling (the sigmoid default bias reads
  // the run-time length in both).
  auto variantWith = [](const std::string &type) {
    VariantSpec spec;
    spec.headDim = spec.valueHeadDim = 24;
    spec.variant = "mlir:func.func @f(%q: " + type + ", %k: " + type + ", %v: " + type + ") -> " +
                   type + " {\n  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : " +
                   type + ", " + type + ", " + type + " -> " + type + "\n  return %o : " + type +
                   "\n}";
    return spec;
  };
  JitStatistics before = Jit::instance().statistics();
  getCpuKernels(variantWith("tensor<1x2x64x24xf32>"));
  getCpuKernels(variantWith("tensor<?x?x?x24xf32>"));
  getCpuKernels(variantWith("tensor<4x8x1000x24xf32>"));
  JitStatistics after = Jit::instance().statistics();
  EXPECT_EQ(after.compiles - before.compiles, 1u);
  EXPECT_EQ(after.diskHits - before.diskHits, 2u);
}

TEST_F(JitInProcess, CaptureSizesWrittenInTheIrDoNotChangeTheKey) {
  // A capture's sizes become dynamic before keying (a call's sizes are checked against the
  // ones written, not compiled into the kernels); its element kind and rank are in the key.
  auto variantWith = [](const std::string &table, bool floating = true) {
    VariantSpec spec;
    spec.headDim = spec.valueHeadDim = 24;
    const std::string t = "tensor<?x?x?x24xf32>";
    spec.variant = "mlir:func.func @f(%q: " + t + ", %k: " + t + ", %v: " + t + ", %table: " +
                   table + ") -> " + t + " {\n  %o = attn.attention %q, %k, %v captures(%table : " +
                   table + ") normalizer(#attn.softmax) : " + t + ", " + t + ", " + t + " -> " +
                   t + "\n  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %i: index, "
                   "%j: index, %x: " + table + "):\n    %c = tensor.extract %x[%h, %j] : " +
                   table + "\n    %r = arith.addf %s, %c : f32\n    attn.yield %r : f32\n  }\n"
                   "  return %o : " + t + "\n}";
    spec.captures.push_back({2, floating, "a test tensor"});
    return spec;
  };
  JitStatistics before = Jit::instance().statistics();
  std::shared_ptr<const CpuKernels> written = getCpuKernels(variantWith("tensor<4x100xf32>"));
  getCpuKernels(variantWith("tensor<?x?xf32>"));
  JitStatistics after = Jit::instance().statistics();
  EXPECT_EQ(after.compiles - before.compiles, 1u);
  EXPECT_EQ(after.diskHits - before.diskHits, 1u);
  ASSERT_EQ(written->captures().size(), 1u);
  EXPECT_EQ(written->captures()[0].sizes, (std::vector<int64_t>{4, 100}));
  EXPECT_EQ(written->captures()[0].type, "tensor<4x100xf32>");
  EXPECT_NE(variantWith("tensor<?x?xf32>").cacheKey(),
            variantWith("tensor<?x?xf32>", false).cacheKey());
  try {
    getCpuKernels(variantWith("tensor<?x?xf32>", false));
    FAIL() << "an integer tensor was taken for an f32 capture";
  } catch (const CompileError &error) {
    EXPECT_NE(std::string(error.what()).find("capture 0 (argument 3 of @f) is tensor<?x?xf32> in "
                                             "the variant IR, but the call passes a test tensor"),
              std::string::npos)
        << error.what();
  }
  // Binding checks the sizes written in the IR.
  std::vector<float> data(4 * 99);
  try {
    written->bindCaptures({CaptureView{data.data(), {4, 99}}});
    FAIL() << "a [4, 99] capture was bound to tensor<4x100xf32>";
  } catch (const CallError &error) {
    EXPECT_NE(std::string(error.what()).find("capture 0 has shape [4, 99] but the variant "
                                             "declares tensor<4x100xf32>"),
              std::string::npos)
        << error.what();
  }
}

TEST_F(JitInProcess, IntegerParametersAreAccepted) {
  // "bias=-2" once reached the IR as an integer literal, which MLIR rejects for an f64.
  VariantSpec spec;
  spec.headDim = spec.valueHeadDim = 16;
  for (const char *variant : {"sigmoid(bias=-2)", "relu(scale=1)", "sigmoid(bias=3e-1)"}) {
    spec.variant = variant;
    EXPECT_NO_THROW(getCpuKernels(spec)) << variant;
  }
}

TEST_F(JitInProcess, VariantTypoNamesTheClosestVariant) {
  VariantSpec spec;
  spec.variant = "sigmiod";
  try {
    getCpuKernels(spec);
    FAIL() << "a misspelled variant compiled";
  } catch (const CompileError &error) {
    EXPECT_NE(std::string(error.what()).find("did you mean 'sigmoid'"), std::string::npos)
        << error.what();
  }
  spec.variant = "softmx(bias=1)";
  EXPECT_THROW(getCpuKernels(spec), CompileError);
}

TEST(JitProcesses, SecondProcessReadsTheDiskCacheInsteadOfCompiling) {
  test::TemporaryDirectory directory;
  test::ProcessResult first =
      test::run(probe(directory.path(), {"--variant=relu", "--head-dim=16"}));
  ASSERT_EQ(first.exitCode, 0) << first.err;
  test::ProbeCounts cold = test::parseProbe(first);
  EXPECT_EQ(cold.compiles, 1);
  EXPECT_EQ(cold.diskHits, 0);
  EXPECT_TRUE(cold.outputOk);

  test::ProcessResult second = test::run(
      probe(directory.path(), {"--variant=relu", "--head-dim=16"}, {{"ATTN_LOG", "info"}}));
  ASSERT_EQ(second.exitCode, 0) << second.err;
  test::ProbeCounts warm = test::parseProbe(second);
  EXPECT_EQ(warm.compiles, 0) << second.err;
  EXPECT_EQ(warm.diskHits, 1);
  EXPECT_TRUE(warm.outputOk) << "code loaded from the cache must run";
  EXPECT_NE(second.err.find("disk cache hit"), std::string::npos) << second.err;
}

TEST(JitProcesses, TwoProcessesRacingOnAnEmptyCacheCompileOnce) {
  test::TemporaryDirectory directory;
  std::vector<std::string> arguments = {"--variant=sigmoid", "--head-dim=32", "--causal"};
  std::vector<test::ProcessResult> results = test::runConcurrently(
      {probe(directory.path(), arguments), probe(directory.path(), arguments)});
  int compiles = 0, hits = 0;
  for (const test::ProcessResult &result : results) {
    ASSERT_EQ(result.exitCode, 0) << result.err;
    test::ProbeCounts counts = test::parseProbe(result);
    EXPECT_TRUE(counts.outputOk);
    compiles += counts.compiles;
    hits += counts.diskHits;
  }
  EXPECT_EQ(compiles, 1) << "both processes compiled the same key";
  EXPECT_EQ(hits, 1);
  EXPECT_EQ(entries(directory, ".kernel").size(), 1u);
  for (const std::string &name : directory.list())
    EXPECT_EQ(name.find(".tmp."), std::string::npos) << "a temporary file was left: " << name;
}

/// Waits for `child` at most `seconds`; a child still running then is killed (its result says
/// so). ChildProcess::wait() alone would wait for a hung child until ctest's timeout.
test::ProcessResult waitAtMost(test::ChildProcess &child, int seconds) {
  for (int tick = 0; tick < seconds * 10; ++tick) {
    siginfo_t info{};
    if (::waitid(P_PID, child.pid(), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0)
      return child.wait();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  child.kill(SIGKILL);
  test::ProcessResult result = child.wait();
  result.err += "\n(killed: still running after " + std::to_string(seconds) + " s)";
  result.exitCode = -1;
  return result;
}

// The exit hang of issue 14: two processes on one fresh cache directory, each exiting right
// after its forward with compiles in flight (the backward's speculative compiles; with the
// tiered JIT also the optimized tiers queued on the background thread, whose key locks the
// other process waits for). LLVM statics first used after the JIT's exit drain was registered
// used to be destroyed before it ran, and the compiles it waited for then read freed memory
// (TargetLibraryInfo's libcall index: a probe loop that never ended). MALLOC_PERTURB_ fills
// freed memory, so that such a read loops every time instead of now and then. Exits from main
// (the main thread's drain, jobs run) and from another thread (the atexit fallback, queued jobs
// left) must both end, successfully, within the bound.
TEST(JitProcesses, TwoProcessesExitingWithCompilesInFlightEndPromptly) {
  for (const char *tiered : {"1", "0"}) {
    for (bool fromThread : {false, true}) {
      SCOPED_TRACE(std::string("ATTN_TIERED_COMPILE=") + tiered +
                   (fromThread ? ", exit from a thread" : ", exit from main"));
      test::TemporaryDirectory directory;
      std::vector<std::string> arguments = {"--variant=softmax(scale=0.0623)", "--head-dim=32"};
      if (fromThread)
        arguments.push_back("--exit-from-thread");
      const std::map<std::string, std::string> environment = {
          {"ATTN_TIERED_COMPILE", tiered},
          {"ATTN_SPECULATE_BACKWARD", "1"},
          {"MALLOC_PERTURB_", "165"}};
      test::ChildProcess first(probe(directory.path(), arguments, environment));
      test::ChildProcess second(probe(directory.path(), arguments, environment));
      for (test::ChildProcess *child : {&first, &second}) {
        test::ProcessResult result = waitAtMost(*child, 90);
        EXPECT_EQ(result.exitCode, 0) << result.err;
        EXPECT_TRUE(test::parseProbe(result).outputOk) << result.out << result.err;
      }
      if (!fromThread) {
        EXPECT_GE(entries(directory, ".kernel").size(), 1u)
            << "the forward's optimized object reaches the disk cache at exit";
      }
    }
  }
}

TEST(JitProcesses, TruncatedEntryIsReportedAndRecompiled) {
  test::TemporaryDirectory directory;
  std::vector<std::string> arguments = {"--variant=softmax", "--head-dim=16"};
  ASSERT_EQ(test::run(probe(directory.path(), arguments)).exitCode, 0);
  std::vector<std::string> written = entries(directory, ".kernel");
  ASSERT_EQ(written.size(), 1u);
  std::string path = directory.path() + "/" + written.front();
  struct stat info;
  ASSERT_EQ(stat(path.c_str(), &info), 0);
  ASSERT_EQ(truncate(path.c_str(), info.st_size / 2), 0);

  test::ProcessResult recovered = test::run(probe(directory.path(), arguments));
  ASSERT_EQ(recovered.exitCode, 0) << recovered.err;
  test::ProbeCounts counts = test::parseProbe(recovered);
  EXPECT_EQ(counts.compiles, 1);
  EXPECT_TRUE(counts.outputOk);
  EXPECT_EQ(count(recovered.err, "is corrupt (truncated"), 1) << recovered.err;

  test::ProbeCounts after = test::parseProbe(test::run(probe(directory.path(), arguments)));
  EXPECT_EQ(after.diskHits, 1) << "the recompiled entry was not written back";
}

TEST(JitProcesses, ReadOnlyCacheDirectoryFallsBackToMemoryAndWarnsOnce) {
  test::TemporaryDirectory directory;
  ASSERT_EQ(chmod(directory.path().c_str(), 0755), 0);
  std::string readOnly = directory.path() + "/read-only";
  ASSERT_EQ(mkdir(readOnly.c_str(), 0555), 0);
  test::ProcessSpec spec =
      probe(readOnly, {"--variant=relu", "--variant=sigmoid", "--head-dim=16"});
  if (geteuid() == 0) {
    // Root writes through 0555: run the probe as an unprivileged user instead.
    if (access("/usr/bin/setpriv", X_OK) != 0)
      GTEST_SKIP() << "running as root without setpriv: cannot make a directory read-only";
    spec.argv.insert(spec.argv.begin(), {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                         "--clear-groups", "--"});
  }
  test::ProcessResult result = test::run(spec);
  if (result.exitCode == 127 || result.err.find("setpriv:") != std::string::npos)
    GTEST_SKIP() << "cannot drop privileges here: " << result.err;
  ASSERT_EQ(result.exitCode, 0) << result.err;
  test::ProbeCounts counts = test::parseProbe(result);
  EXPECT_EQ(counts.compiles, 2);
  EXPECT_TRUE(counts.outputOk);
  EXPECT_EQ(count(result.err, "is not writable"), 1) << result.err;
}

TEST(JitProcesses, CacheDisableKeepsNothingOnDisk) {
  test::TemporaryDirectory directory;
  std::vector<std::string> arguments = {"--variant=relu", "--head-dim=16"};
  for (int run = 0; run < 2; ++run) {
    test::ProbeCounts counts =
        test::parseProbe(test::run(probe(directory.path(), arguments, {{"ATTN_CACHE_DISABLE", "1"}})));
    EXPECT_EQ(counts.compiles, 1);
    EXPECT_EQ(counts.diskHits, 0);
  }
  EXPECT_TRUE(directory.list().empty());
}

TEST(JitProcesses, DumpDirectoryReceivesEveryStage) {
  test::TemporaryDirectory cache, dump;
  test::ProcessResult result = test::run(probe(cache.path(), {"--variant=sigmoid", "--head-dim=16"},
                                               {{"ATTN_DUMP_DIR", dump.path()}}));
  ASSERT_EQ(result.exitCode, 0) << result.err;
  std::vector<std::string> folders = dump.list();
  ASSERT_EQ(folders.size(), 1u);
  std::string folder = dump.path() + "/" + folders.front();
  for (const char *file : {"key.txt", "attn-canonical.mlir", "cpu-optimized.ll"})
    EXPECT_EQ(access((folder + "/" + file).c_str(), R_OK), 0) << file << " was not dumped";
  std::ifstream canonical(folder + "/attn-canonical.mlir");
  std::string text((std::istreambuf_iterator<char>(canonical)), {});
  EXPECT_NE(text.find("#attn.sigmoid"), std::string::npos) << text;
  struct stat info;
  EXPECT_EQ(stat((folder + "/cpu-stages").c_str(), &info), 0) << "no per-pass IR";
}
} // namespace
} // namespace attn::runtime
