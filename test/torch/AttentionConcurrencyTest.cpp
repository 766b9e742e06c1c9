// Many threads calling attn::attention at once, forward and backward, on a mix of variants
// (built-ins, an IR normalizer and a score_mod mask), all starting together on a cold kernel
// cache (a fresh ATTN_CACHE_DIR and variants no other test uses): every result must equal,
// bit for bit, the result of the same call made alone afterwards, and every kernel must have
// been compiled exactly once.
#include "test/torch/NumericsSupport.h"

#include "runtime/Jit.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/autograd.h>

#include <atomic>
#include <cstdlib>
#include <ftw.h>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

namespace attn::test {
namespace {

/// `text` with every "TYPE" replaced by tensor<?x?x?x{headDim}xf32>.
std::string withType(std::string text, int64_t headDim) {
  const std::string type = "tensor<?x?x?x" + std::to_string(headDim) + "xf32>";
  for (size_t at = text.find("TYPE"); at != std::string::npos; at = text.find("TYPE", at))
    text.replace(at, 4, type);
  return text;
}

/// A half-tanh normalizer with a constant of its own, under a sliding-window mask written as a
/// score_mod that returns -inf (keys i - 20 <= j <= i): the IR paths of the compiler.
std::string maskedIrVariant(int64_t headDim) {
  return withType(R"(mlir:
func.func @concurrent(%q: TYPE, %k: TYPE, %v: TYPE) -> TYPE {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : TYPE, TYPE, TYPE -> TYPE
  normalizer_body {
  ^bb0(%s: f32):
    %half = arith.constant 0.4375 : f32
    %t = math.tanh %s : f32
    %h = arith.mulf %t, %half : f32
    %p = arith.addf %h, %half : f32
    attn.yield %p : f32
  }
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %w = arith.constant 20 : index
    %lo = arith.subi %i, %w : index
    %after = arith.cmpi sge, %j, %lo : index
    %before = arith.cmpi sle, %j, %i : index
    %keep = arith.andi %after, %before : i1
    %minus_inf = arith.constant 0xFF800000 : f32
    %r = arith.select %keep, %s, %minus_inf : f32
    attn.yield %r : f32
  }
  return %o : TYPE
})",
                  headDim);
}

/// Causal softmax with an ALiBi-style score_mod whose mask empties the first key block (rows
/// below 64 see no key at all).
std::string softmaxIrVariant(int64_t headDim) {
  return withType(R"(mlir:
func.func @concurrent_softmax(%q: TYPE, %k: TYPE, %v: TYPE) -> TYPE {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal} : TYPE, TYPE, TYPE -> TYPE
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %slope = arith.constant 0.0390625 : f32
    %d = arith.subi %i, %j : index
    %di = arith.index_cast %d : index to i64
    %df = arith.sitofp %di : i64 to f32
    %pen = arith.mulf %slope, %df : f32
    %r0 = arith.subf %s, %pen : f32
    %k0 = arith.constant 64 : index
    %keep = arith.cmpi sge, %j, %k0 : index
    %minus_inf = arith.constant 0xFF800000 : f32
    %r = arith.select %keep, %r0, %minus_inf : f32
    attn.yield %r : f32
  }
  return %o : TYPE
})",
                  headDim);
}

struct Task {
  std::string variant;
  bool causal = false;
  std::optional<double> scale;
  int64_t batch, heads, kvHeads, queries, keys, dim, valueDim;
  at::ScalarType dtype = at::kFloat;
};

struct Inputs {
  at::Tensor q, k, v, gradOut;
};

struct Outputs {
  at::Tensor out, dq, dk, dv;
};

std::vector<Task> tasks() {
  // Variant strings and scales no other test uses, so the in-process cache starts cold too.
  return {
      {"softmax", true, 0.171875, 2, 4, 2, 77, 77, 32, 32},
      {"softmax", false, 0.171875, 1, 8, 1, 5, 140, 32, 16, at::kBFloat16},
      {"sigmoid(bias=-2.375)", false, {}, 2, 4, 4, 33, 65, 16, 16},
      {"sigmoid(bias=-2.375)", true, {}, 1, 6, 3, 130, 129, 16, 16, at::kHalf},
      {"relu(scale=0.046875)", true, {}, 3, 2, 1, 64, 64, 24, 24},
      {"sigmoid", false, 0.3515625, 1, 2, 2, 1, 200, 8, 8},
      {maskedIrVariant(32), false, {}, 2, 4, 2, 100, 90, 32, 32},
      {softmaxIrVariant(16), false, {}, 1, 4, 2, 150, 150, 16, 16},
      {maskedIrVariant(32), true, {}, 1, 2, 1, 70, 70, 32, 32, at::kBFloat16},
  };
}

/// The distinct kernels the tasks need: what the JIT keys on besides dtype (CPU kernels
/// compute in float32 whatever the input dtype).
size_t distinctKernels(const std::vector<Task> &all) {
  std::set<std::tuple<std::string, bool, std::optional<double>, int64_t, int64_t>> keys;
  for (const Task &task : all)
    keys.insert({task.variant, task.causal, task.scale, task.dim, task.valueDim});
  return keys.size();
}

Inputs makeInputs(const Task &task, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  Inputs inputs;
  inputs.q = randomTensor({task.batch, task.heads, task.queries, task.dim}, task.dtype, generator);
  inputs.k = randomTensor({task.batch, task.kvHeads, task.keys, task.dim}, task.dtype, generator);
  inputs.v =
      randomTensor({task.batch, task.kvHeads, task.keys, task.valueDim}, task.dtype, generator);
  inputs.gradOut =
      randomTensor({task.batch, task.heads, task.queries, task.valueDim}, task.dtype, generator);
  return inputs;
}

Outputs call(const Task &task, const Inputs &inputs) {
  // Leaves of this call's own: the inputs' storage is shared read-only between threads.
  const at::Tensor q = inputs.q.detach().requires_grad_(true);
  const at::Tensor k = inputs.k.detach().requires_grad_(true);
  const at::Tensor v = inputs.v.detach().requires_grad_(true);
  AttentionOptions options;
  options.variant = task.variant;
  options.causal = task.causal;
  if (task.scale)
    options.scale = *task.scale;
  Outputs outputs;
  outputs.out = attention(q, k, v, options);
  const torch::autograd::variable_list grads =
      torch::autograd::grad({outputs.out}, {q, k, v}, {inputs.gradOut});
  outputs.out = outputs.out.detach();
  outputs.dq = grads[0];
  outputs.dk = grads[1];
  outputs.dv = grads[2];
  return outputs;
}

bool allFinite(const Outputs &outputs) {
  for (const at::Tensor &t : {outputs.out, outputs.dq, outputs.dk, outputs.dv})
    if (!t.isfinite().all().item<bool>())
      return false;
  return true;
}

class AttentionConcurrency : public testing::Test {
protected:
  void SetUp() override {
    char pattern[] = "/tmp/attn-concurrency-cache-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    directory = pattern;
    setenv("ATTN_CACHE_DIR", directory.c_str(), 1);
    unsetenv("ATTN_CACHE_DISABLE");
    unsetenv("ATTN_DUMP_DIR");
    runtime::Jit::instance().reconfigureFromEnvironment();
  }
  void TearDown() override {
    unsetenv("ATTN_CACHE_DIR");
    runtime::Jit::instance().reconfigureFromEnvironment();
    nftw(
        directory.c_str(),
        [](const char *path, const struct stat *, int, struct FTW *) { return ::remove(path); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string directory;
};

TEST_F(AttentionConcurrency, ThreadsOnAColdCacheGetTheSingleThreadedResults) {
  const std::vector<Task> all = tasks();
  std::vector<Inputs> inputs;
  for (size_t i = 0; i < all.size(); ++i)
    inputs.push_back(makeInputs(all[i], 1000 + i));

  constexpr int kThreads = 12, kRounds = 2;
  const runtime::JitStatistics before = runtime::Jit::instance().statistics();
  // results[thread][round * tasks + task]
  std::vector<std::vector<Outputs>> results(kThreads);
  std::vector<std::string> errors(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      try {
        results[t].resize(kRounds * all.size());
        // Each thread walks the tasks in its own order, so different variants compile and
        // run side by side from the first instant.
        for (int round = 0; round < kRounds; ++round)
          for (size_t n = 0; n < all.size(); ++n) {
            const size_t task = (n + static_cast<size_t>(t) * 5 + round) % all.size();
            results[t][round * all.size() + task] = call(all[task], inputs[task]);
          }
      } catch (const std::exception &error) {
        errors[t] = error.what();
      }
    });
  for (std::thread &thread : threads)
    thread.join();
  for (int t = 0; t < kThreads; ++t)
    ASSERT_TRUE(errors[t].empty()) << "thread " << t << ": " << errors[t];

  const runtime::JitStatistics after = runtime::Jit::instance().statistics();
  // Each variant is three artifacts (forward, dQ, dK/dV), and every task runs the backward.
  EXPECT_EQ(after.compiles - before.compiles, 3 * distinctKernels(all))
      << "a kernel was compiled more (or less) than once";
  EXPECT_EQ(after.diskHits - before.diskHits, 0u) << "the cache directory was not cold";

  for (size_t task = 0; task < all.size(); ++task) {
    const Outputs alone = call(all[task], inputs[task]);
    ASSERT_TRUE(allFinite(alone)) << "task " << task;
    ASSERT_GT(alone.out.abs().sum().item<double>(), 0.0) << "task " << task;
    for (int t = 0; t < kThreads; ++t)
      for (int round = 0; round < kRounds; ++round) {
        const Outputs &got = results[t][round * all.size() + task];
        EXPECT_TRUE(at::equal(got.out, alone.out)) << "out, task " << task << " thread " << t;
        EXPECT_TRUE(at::equal(got.dq, alone.dq)) << "dq, task " << task << " thread " << t;
        EXPECT_TRUE(at::equal(got.dk, alone.dk)) << "dk, task " << task << " thread " << t;
        EXPECT_TRUE(at::equal(got.dv, alone.dv)) << "dv, task " << task << " thread " << t;
      }
  }
}

} // namespace
} // namespace attn::test
