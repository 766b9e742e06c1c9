// Compile-time benchmark (not a test): for each variant, how long until its kernels are
// callable — cold (compile into an empty disk cache; the forward alone, then with the
// backward), warm (a new process reading the disk cache), and a memory hit (the same process
// asking again). `--speed` instead times the generated code (one thread, S=4096, D=64). Each measurement of the first two
// runs in a fresh child process of this binary, so nothing is shared but the cache directory.
#include "codegen/CpuPipeline.h"
#include "codegen/GpuCompiler.h"
#include "runtime/CpuKernels.h"
#include "runtime/VariantSource.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {
using attn::runtime::VariantSpec;

std::string readFile(const std::string &path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

/// In the child: time to a callable forward, then to callable backward kernels, then the
/// median memory-hit latency. A training call (`backwardUse` Expected: its inputs require grad)
/// has dQ and dK/dV compiled beside the forward; an inference call (NotExpected) only the
/// forward, whose time alone is printed.
int measureInChild(const VariantSpec &spec, attn::runtime::BackwardUse backwardUse) {
  auto kernels = attn::runtime::getCpuKernels(spec, backwardUse);
  if (backwardUse == attn::runtime::BackwardUse::NotExpected) {
    std::printf("%.3f -1 -1\n", kernels->compileMillis());
    return 0;
  }
  auto start = std::chrono::steady_clock::now();
  kernels->prepareBackward();
  const double backwardMillis =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  constexpr int kCalls = 200000;
  std::vector<double> perCallNs;
  for (int batch = 0; batch < 7; ++batch) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i)
      kernels = attn::runtime::getCpuKernels(spec);
    perCallNs.push_back(
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
        kCalls);
  }
  std::sort(perCallNs.begin(), perCallNs.end());
  std::printf("%.3f %.3f %.1f\n", kernels->compileMillis(),
              kernels->compileMillis() + backwardMillis, perCallNs[perCallNs.size() / 2]);
  return 0;
}

/// Cold IR -> PTX (forward and backward kernels, bf16, sm_90a) in this process: the GPU
/// pipeline alone, no driver.
double ptxCompileMillis(const VariantSpec &spec) {
  std::string text;
  {
    mlir::DialectRegistry registry;
    attn::codegen::registerCpuDialects(registry);
    mlir::MLIRContext context(registry);
    auto module = attn::runtime::buildVariantModule(spec, context);
    llvm::raw_string_ostream stream(text);
    module->print(stream);
  }
  attn::codegen::GpuCompileOptions options;
  options.target = attn::codegen::GpuTarget::Sm90a;
  options.dtype = "bf16";
  auto start = std::chrono::steady_clock::now();
  attn::codegen::compileAttentionToPtx(text, options);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

struct ChildResult {
  double forwardMillis = -1, millis = -1, hitNs = -1;
};

ChildResult runChild(const char *self, const std::string &cacheDirectory, int index,
                     bool inference = false) {
  int pipeFds[2];
  if (pipe(pipeFds) != 0)
    return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipeFds[1], 1);
    close(pipeFds[0]);
    setenv("ATTN_CACHE_DIR", cacheDirectory.c_str(), 1);
    unsetenv("ATTN_CACHE_DISABLE");
    unsetenv("ATTN_DUMP_DIR");
    std::string argument =
        (inference ? "--inference-child=" : "--child=") + std::to_string(index);
    execl(self, self, argument.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  close(pipeFds[1]);
  char buffer[256] = {};
  ssize_t got = read(pipeFds[0], buffer, sizeof buffer - 1);
  close(pipeFds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ChildResult result;
  if (got > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
    std::sscanf(buffer, "%lf %lf %lf", &result.forwardMillis, &result.millis, &result.hitNs);
  return result;
}

struct Case {
  std::string label;
  VariantSpec spec;
};

std::vector<Case> cases() {
  auto make = [](std::string label, std::string variant, int64_t dim, bool causal) {
    VariantSpec spec;
    spec.variant = std::move(variant);
    spec.headDim = spec.valueHeadDim = dim;
    spec.causal = causal;
    return Case{std::move(label), spec};
  };
  std::vector<Case> all = {
      make("softmax D=64", "softmax", 64, false),
      make("softmax causal D=128", "softmax", 128, true),
      make("sigmoid D=64", "sigmoid", 64, false),
      make("sigmoid causal D=128", "sigmoid", 128, true),
      make("relu D=64", "relu", 64, false),
  };
  std::string custom = readFile(ATTN_EXAMPLES_DIR "/custom.mlir");
  Case written = make("custom.mlir D=64 Dv=32", "mlir:" + custom, 64, false);
  written.spec.valueHeadDim = 32;
  all.push_back(written);
  all.push_back(make("alibi.mlir D=64 causal", "mlir:" + readFile(ATTN_EXAMPLES_DIR "/alibi.mlir"),
                     64, true));
  return all;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

/// --speed: the generated code's speed on one thread (B=1, H=2, S=4096, D=64), fastest of
/// several runs, so that a cheaper compile pipeline can be checked against a slower code.
int measureSpeed() {
  const int64_t heads = 2, length = 4096, dim = 64;
  std::vector<float> q(heads * length * dim), k(q.size()), v(q.size()), o(q.size()), dout(q.size()),
      dq(q.size()), dk(q.size()), dv(q.size()), lse(heads * length), delta(heads * length, 0.5f);
  uint32_t state = 12345;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
  };
  for (std::vector<float> *tensor : {&q, &k, &v, &dout})
    for (float &value : *tensor)
      value = next();
  auto view4 = [&](std::vector<float> &data) {
    attn::runtime::View4 view;
    view.data = data.data();
    const int64_t sizes[4] = {1, heads, length, dim}, strides[4] = {heads * length * dim,
                                                                    length * dim, dim, 1};
    std::copy(sizes, sizes + 4, view.sizes);
    std::copy(strides, strides + 4, view.strides);
    return view;
  };
  auto view3 = [&](std::vector<float> &data) {
    attn::runtime::View3 view;
    view.data = data.data();
    const int64_t sizes[3] = {1, heads, length}, strides[3] = {heads * length, length, 1};
    std::copy(sizes, sizes + 3, view.sizes);
    std::copy(strides, strides + 3, view.strides);
    return view;
  };
  for (const char *variant : {"softmax", "sigmoid"}) {
    VariantSpec spec;
    spec.variant = variant;
    spec.headDim = spec.valueHeadDim = dim;
    auto kernels = attn::runtime::getCpuKernels(spec);
    auto time = [](auto &&body) {
      auto start = std::chrono::steady_clock::now();
      body();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
          .count();
    };
    std::vector<double> forward, backward;
    for (int rep = 0; rep < 9; ++rep) {
      forward.push_back(time([&] {
        for (int64_t head = 0; head < heads; ++head)
          for (int64_t start = 0; start < length; start += kernels->queryTile())
            kernels->forwardTile(view4(q), view4(k), view4(v), view4(o), view3(lse), 0, head,
                                 start);
      }));
      if (rep % 3 == 0)
        backward.push_back(time([&] {
          for (int64_t head = 0; head < heads; ++head) {
            for (int64_t start = 0; start < length; start += kernels->queryTile())
              kernels->backwardQueryTile(view4(q), view4(k), view4(v), view4(dout), view3(lse),
                                         view3(delta), view4(dq), 0, head, start);
            for (int64_t start = 0; start < length; start += kernels->keyTile())
              kernels->backwardKeyTile(view4(q), view4(k), view4(v), view4(dout), view3(lse),
                                       view3(delta), view4(dk), view4(dv), 0, head, start);
          }
        }));
    }
    const double flops = 4.0 * heads * length * length * dim;
    double fwd = *std::min_element(forward.begin(), forward.end());
    double bwd = *std::min_element(backward.begin(), backward.end());
    std::printf("%s D=%lld S=%lld 1 thread: forward %.2f ms (%.1f GFLOP/s), backward %.2f ms "
                "(%.1f GFLOP/s)\n",
                variant, static_cast<long long>(dim), static_cast<long long>(length), fwd,
                flops / fwd / 1e6, bwd, 2.5 * flops / bwd / 1e6);
  }
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  std::vector<Case> all = cases();
  if (argc == 2 && std::string(argv[1]).rfind("--child=", 0) == 0)
    return measureInChild(all.at(std::stoul(std::string(argv[1]).substr(8))).spec,
                          attn::runtime::BackwardUse::Expected);
  if (argc == 2 && std::string(argv[1]).rfind("--inference-child=", 0) == 0)
    return measureInChild(all.at(std::stoul(std::string(argv[1]).substr(18))).spec,
                          attn::runtime::BackwardUse::NotExpected);
  if (argc == 2 && std::string(argv[1]) == "--speed")
    return measureSpeed();

  char directoryTemplate[] = "/tmp/attn-bench-compile-XXXXXX";
  if (!mkdtemp(directoryTemplate))
    return 1;
  std::printf("CPU kernels, time until callable, medians of 3 fresh processes each: the forward "
              "of an inference call (inputs without grad: no backward compiled), and of a "
              "training call (inputs requiring grad: dQ and dK/dV compiled beside it, at the same "
              "priority), then forward + dQ + dK/dV of that training call\n\n");
  std::printf("| variant | CPU cold forward, no grad ms | CPU cold forward, grad ms | CPU cold "
              "fwd + dQ + dK/dV ms | CPU disk hit (all three) ms | memory hit µs | IR -> PTX ms "
              "(sm_90a, bf16, fwd+bwd) |\n"
              "|---|---:|---:|---:|---:|---:|---:|\n");
  for (size_t index = 0; index < all.size(); ++index) {
    std::vector<double> inferenceForward, coldForward, cold, warm, hit, ptx;
    for (int rep = 0; rep < 3; ++rep) {
      std::string directory =
          std::string(directoryTemplate) + "/" + std::to_string(index) + "-" + std::to_string(rep);
      ChildResult first = runChild(argv[0], directory, static_cast<int>(index));
      ChildResult second = runChild(argv[0], directory, static_cast<int>(index));
      ChildResult inference = runChild(argv[0], directory + "-inference",
                                       static_cast<int>(index), /*inference=*/true);
      if (first.millis < 0 || second.millis < 0 || inference.forwardMillis < 0) {
        std::fprintf(stderr, "%s: a child failed\n", all[index].label.c_str());
        return 1;
      }
      inferenceForward.push_back(inference.forwardMillis);
      coldForward.push_back(first.forwardMillis);
      cold.push_back(first.millis);
      warm.push_back(second.millis);
      hit.push_back(second.hitNs);
      try {
        ptx.push_back(ptxCompileMillis(all[index].spec));
      } catch (const attn::codegen::GpuCompileError &error) {
        std::fprintf(stderr, "%s: no PTX: %s\n", all[index].label.c_str(), error.what());
        ptx.push_back(-1);
      }
    }
    std::printf("| %s | %.1f | %.1f | %.1f | %.2f | %.3f | %.1f |\n", all[index].label.c_str(),
                median(inferenceForward), median(coldForward), median(cold), median(warm), median(hit) / 1000.0,
                median(ptx));
    if (median(ptx) < 0)
      std::printf("  (the GPU backend rejects this variant; see stderr)\n");
    std::fflush(stdout);
  }
  std::string cleanup = std::string("rm -rf ") + directoryTemplate;
  return std::system(cleanup.c_str()) == 0 ? 0 : 1;
}
