// The CUDA path without a GPU: real PTX from the GPU pipeline, loaded through the driver layer
// into a stand-in libcuda that records launches. Checks the launch contract: grid (row blocks,
// heads, batch) from runtime sizes, the expanded memref arguments (every parameter the PTX
// declares), the backward's kernel sequence per normalizer, the >48 KB shared-memory opt-in,
// kernels kept per device, and captured tensors (their order, the fault flags' zeroing and
// read-back, the errors of captures that do not fit or that a region read outside of).
#include "test/runtime/StandInDriver.h"

#include <algorithm>
#include <dirent.h>
#include <fstream>
#include <iterator>

namespace attn::runtime {
namespace {
using namespace standin;

TEST(GpuLaunch, ForwardGridCoversQueryBlocksHeadsAndBatch) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 0);
  EXPECT_EQ(kernels->target(), "sm_90a");
  Problem problem;
  fake.reset();
  void *stream = reinterpret_cast<void *>(0x5150);
  kernels->forward(problem.q, problem.k, problem.v, problem.o, problem.lse, stream);
  ASSERT_EQ(fake.launchCount(), 1);
  const FakeLaunch &launch = *fake.launch(0);
  EXPECT_TRUE(endsWith(nameOf(launch), "_fwd")) << nameOf(launch);
  const int64_t rows = kernels->blockRows("fwd");
  ASSERT_GT(rows, 0);
  EXPECT_EQ(launch.grid[0], ceilDiv(problem.queries, rows));
  EXPECT_EQ(launch.grid[1], problem.heads);
  EXPECT_EQ(launch.grid[2], problem.batch);
  EXPECT_EQ(launch.block[0] % 32, 0u) << "whole warps";
  EXPECT_EQ(launch.stream, stream) << "not launched on the caller's stream";
  EXPECT_EQ(launch.firstPointer, problem.q.data);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(launch.firstSizes[i], problem.q.sizes[i]);
}

TEST(GpuLaunch, SoftmaxBackwardRunsDeltaThenQueryThenKeyKernels) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 0);
  ASSERT_TRUE(kernels->rowWise());
  Problem p;
  fake.reset();
  kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                    p.gradValue, nullptr);
  ASSERT_EQ(fake.launchCount(), 3);
  EXPECT_TRUE(endsWith(nameOf(*fake.launch(0)), "_bwd_delta"));
  EXPECT_EQ(fake.launch(0)->firstPointer, p.o.data);
  EXPECT_TRUE(endsWith(nameOf(*fake.launch(1)), "_bwd_dq"));
  EXPECT_EQ(fake.launch(1)->grid[1], p.heads);
  const FakeLaunch &keys = *fake.launch(2);
  EXPECT_TRUE(endsWith(nameOf(keys), "_bwd_dkdv"));
  EXPECT_EQ(keys.grid[0], ceilDiv(p.keys, kernels->blockRows("bwd_dkdv")));
  EXPECT_EQ(keys.grid[1], p.kvHeads) << "dK/dV blocks run per key/value head (GQA)";
  EXPECT_EQ(keys.grid[2], p.batch);
}

// A ragged variant's kernels (compiled through the real GPU pipeline) take the key lengths
// after their views; a call must pass them exactly when the variant has them, since the driver
// cannot tell a missing kernel argument from garbage.
TEST(GpuLaunch, KeyLengthsArePassedExactlyWhenTheVariantTakesThem) {
  FakeDriver &fake = FakeDriver::get();
  VariantSpec raggedSpec = spec("softmax", 64);
  raggedSpec.keyLengths = true;
  auto ragged = getGpuKernels(raggedSpec, GpuDtype::BFloat16, 0);
  auto plain = getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 0);
  ASSERT_NE(ragged.get(), plain.get()) << "key lengths must be part of the kernels' key";
  Problem p;
  DeviceLengths lengths = view<1>(0xb0000, {p.batch});
  fake.reset();
  EXPECT_THROW(plain->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, &lengths), CompileError);
  EXPECT_THROW(ragged->forward(p.q, p.k, p.v, p.o, p.lse, nullptr), CompileError);
  EXPECT_THROW(ragged->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery,
                                p.gradKey, p.gradValue, nullptr),
               CompileError);
  EXPECT_EQ(fake.launchCount(), 0) << "nothing may launch with the wrong arguments";
  ragged->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, &lengths);
  ragged->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                   p.gradValue, nullptr, &lengths);
  ASSERT_EQ(fake.launchCount(), 4);
  EXPECT_TRUE(endsWith(nameOf(*fake.launch(0)), "_fwd"));
  EXPECT_TRUE(endsWith(nameOf(*fake.launch(3)), "_bwd_dkdv"));
}

// Every launch passes exactly the parameters its kernel's PTX declares (the stand-in reads that
// many; the launcher refuses to launch otherwise).
TEST(GpuLaunch, LaunchesPassEveryDeclaredParameter) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 0);
  Problem p;
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr);
  kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                    p.gradValue, nullptr);
  ASSERT_EQ(fake.launchCount(), 4);
  // q, k, v, o: 11 parameters each (2 pointers, offset, 4 sizes, 4 strides); lse 9.
  EXPECT_EQ(fake.launch(0)->parameterCount, 4 * 11 + 9);
  EXPECT_EQ(fake.launch(1)->parameterCount, 2 * 11 + 9) << "bwd_delta(o, dO, delta)";
  EXPECT_EQ(fake.launch(2)->parameterCount, 5 * 11 + 2 * 9) << "bwd_dq";
  EXPECT_EQ(fake.launch(3)->parameterCount, 6 * 11 + 2 * 9) << "bwd_dkdv";
  EXPECT_EQ(fake.memsetCount(), 0) << "a variant without captures has no fault flags";
  EXPECT_EQ(fake.synchronizeCount(), 0) << "a variant without captures never waits";
}

TEST(GpuLaunch, SigmoidBackwardNeedsNoDeltaPass) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(spec("sigmoid", 64), GpuDtype::Float16, 0);
  ASSERT_FALSE(kernels->rowWise());
  Problem p;
  fake.reset();
  kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                    p.gradValue, nullptr);
  ASSERT_EQ(fake.launchCount(), 2);
  EXPECT_TRUE(endsWith(nameOf(*fake.launch(0)), "_bwd_dq"));
  EXPECT_TRUE(endsWith(nameOf(*fake.launch(1)), "_bwd_dkdv"));
}

TEST(GpuLaunch, LargeSharedMemoryIsOptedInBeforeLaunch) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(spec("softmax", 128), GpuDtype::BFloat16, 0);
  Problem p;
  p.dim = 128;
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr);
  kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                    p.gradValue, nullptr);
  int large = 0;
  for (int i = 0; i < fake.launchCount(); ++i) {
    const FakeLaunch &launch = *fake.launch(i);
    large += launch.sharedBytes > 48 * 1024;
    if (launch.sharedBytes > 48 * 1024) {
      EXPECT_GE(fake.sharedOptIn(launch.function), static_cast<int>(launch.sharedBytes))
          << nameOf(launch) << " launched with " << launch.sharedBytes
          << " B of shared memory without the opt-in";
    }
  }
  EXPECT_GT(large, 0) << "no D=128 kernel uses more than 48 KB: the check above checked nothing";
}

TEST(GpuLaunch, KernelsAreKeptPerDeviceAndCompiledOnce) {
  auto first = getGpuKernels(spec("relu", 64), GpuDtype::BFloat16, 0);
  JitStatistics before = Jit::instance().statistics();
  auto again = getGpuKernels(spec("relu", 64), GpuDtype::BFloat16, 0);
  auto other = getGpuKernels(spec("relu", 64), GpuDtype::BFloat16, 1);
  JitStatistics after = Jit::instance().statistics();
  EXPECT_EQ(first.get(), again.get());
  EXPECT_NE(first.get(), other.get()) << "a module lives in one device's context";
  EXPECT_EQ(after.compiles, before.compiles) << "the second device recompiled the PTX";
  EXPECT_EQ(after.diskHits - before.diskHits, 1u);
}

TEST(GpuLaunch, PrimaryContextIsRetainedOncePerDevice) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 0);
  Problem p;
  for (int launch = 0; launch < 5; ++launch)
    kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr);
  EXPECT_EQ(fake.contextRetains(0), 1) << "every launch retained the primary context again";
}

/// Paths of the regular files under `root`, relative to it.
std::vector<std::string> filesUnder(const std::string &root, const std::string &prefix = "") {
  std::vector<std::string> files;
  DIR *directory = opendir((root + "/" + prefix).c_str());
  if (!directory)
    return files;
  while (dirent *entry = readdir(directory)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..")
      continue;
    if (entry->d_type == DT_DIR) {
      std::vector<std::string> nested = filesUnder(root, prefix + name + "/");
      files.insert(files.end(), nested.begin(), nested.end());
    } else {
      files.push_back(prefix + name);
    }
  }
  closedir(directory);
  return files;
}

bool anyEndsWith(const std::vector<std::string> &files, const std::string &suffix) {
  return std::any_of(files.begin(), files.end(),
                     [&](const std::string &file) { return endsWith(file, suffix); });
}

TEST(GpuLaunch, DumpDirectoryReceivesEveryStage) {
  test::TemporaryDirectory dump;
  setenv("ATTN_DUMP_DIR", dump.path().c_str(), 1);
  Jit::instance().reconfigureFromEnvironment();
  struct Restore {
    ~Restore() {
      unsetenv("ATTN_DUMP_DIR");
      Jit::instance().reconfigureFromEnvironment();
    }
  } restore;
  // A variant no other test compiles: the memory cache would skip the compile.
  VariantSpec causal = spec("sigmoid", 32);
  causal.causal = true;
  getGpuKernels(causal, GpuDtype::BFloat16, 0);

  std::vector<std::string> folders = dump.list();
  ASSERT_EQ(folders.size(), 1u);
  std::string folder = dump.path() + "/" + folders.front();
  std::vector<std::string> files = filesUnder(folder);
  for (const char *file : {"key.txt", "attn-canonical.mlir", "kernels.ptx"})
    EXPECT_TRUE(std::count(files.begin(), files.end(), file)) << file << " was not dumped";
  // The IR after every pass that changed it, one tree per pass manager of the compile.
  std::vector<std::string> stages = filesUnder(folder + "/gpu-stages");
  for (const char *pass :
       {"_attn-legalize.mlir", "_attn-tile-gpu.mlir", "_convert-nvgpu-to-nvvm.mlir",
        "_nvvm-attach-target.mlir", "_convert-gpu-to-nvvm.mlir", "_gpu-module-to-binary.mlir"})
    EXPECT_TRUE(anyEndsWith(stages, pass)) << "no IR after " << pass << " under gpu-stages";
  for (const char *tree : {"0_kernels/", "1_nvvm/", "2_ptx/"})
    EXPECT_TRUE(std::any_of(stages.begin(), stages.end(),
                            [&](const std::string &file) { return file.rfind(tree, 0) == 0; }))
        << "no stage tree " << tree;
  // The kernels stage holds gpu.func kernels, the PTX stage the gpu.binary.
  for (const std::string &file : stages)
    if (endsWith(file, "_attn-tile-gpu.mlir")) {
      std::ifstream stream(folder + "/gpu-stages/" + file);
      std::string text((std::istreambuf_iterator<char>(stream)), {});
      EXPECT_NE(text.find("gpu.func @attention_fwd"), std::string::npos) << file;
    }
}

TEST(GpuLaunch, UnsupportedHeadDimIsACompileError) {
  try {
    getGpuKernels(spec("softmax", 72), GpuDtype::BFloat16, 0);
    FAIL() << "D = 72 compiled";
  } catch (const CompileError &error) {
    EXPECT_NE(std::string(error.what()).find("72"), std::string::npos) << error.what();
  }
}

TEST(GpuLaunch, MissingDeviceIsADriverError) {
  EXPECT_THROW(getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 5), cuda::CudaError);
}
} // namespace
} // namespace attn::runtime
