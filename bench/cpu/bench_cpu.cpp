// CPU benchmark (not a test): attn::attention vs LibTorch's unfused attention
// (matmul -> softmax -> matmul), forward, float32, same intra-op threads. Each measurement
// runs in a forked child so that its peak RSS is its own: peak memory is reported above what
// the inputs and the output take.
#include "frontend/torch/Attention.h"

#include <torch/torch.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {
struct Measurement {
  double medianMs = 0;
  double extraPeakMiB = 0;
};

/// VmRSS or VmHWM of this process, in KiB.
long statusKiB(const std::string &field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0)
      return std::stol(line.substr(field.size() + 1));
  return -1;
}

/// Resets VmHWM to the current RSS (Linux clear_refs 5).
void resetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }

Measurement measure(bool ours, const std::string &variant, int64_t length, int64_t headDim,
                    int64_t heads, int reps) {
  torch::manual_seed(length);
  auto q = torch::randn({1, heads, length, headDim});
  auto k = torch::randn({1, heads, length, headDim});
  auto v = torch::randn({1, heads, length, headDim});
  double scale = 1.0 / std::sqrt(double(headDim));
  attn::AttentionOptions options{variant, std::nullopt, false};
  auto run = [&] {
    if (ours)
      return attn::attention(q, k, v, options);
    auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
    auto probabilities = variant == "softmax"
                             ? torch::softmax(scores, -1)
                             : torch::sigmoid(scores - std::log(double(length)));
    return torch::matmul(probabilities, v);
  };
  torch::Tensor out = run(); // warm-up: JIT compile, allocator pools
  out.reset();
  long baseline = statusKiB("VmRSS");
  resetPeak();
  std::vector<double> times;
  for (int rep = 0; rep < reps; ++rep) {
    auto start = std::chrono::steady_clock::now();
    out = run();
    times.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count());
    if (rep + 1 < reps)
      out.reset();
  }
  std::sort(times.begin(), times.end());
  long outputKiB = out.numel() * 4 / 1024;
  Measurement m;
  m.medianMs = times[times.size() / 2];
  m.extraPeakMiB = (statusKiB("VmHWM") - baseline - outputKiB) / 1024.0;
  return m;
}

/// Runs `measure` in a child process and returns its result through a pipe.
Measurement measureInChild(bool ours, const std::string &variant, int64_t length,
                           int64_t headDim, int64_t heads, int reps) {
  int fds[2];
  if (pipe(fds) != 0)
    throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Measurement m = measure(ours, variant, length, headDim, heads, reps);
    if (write(fds[1], &m, sizeof m) != sizeof m)
      _exit(2);
    _exit(0);
  }
  close(fds[1]);
  Measurement m;
  ssize_t got = read(fds[0], &m, sizeof m);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != sizeof m || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("benchmark child failed");
  return m;
}
} // namespace

int main(int argc, char **argv) {
  const int64_t headDim = 64, heads = 1;
  std::vector<int64_t> lengths = {512, 1024, 2048, 4096, 8192, 16384};
  if (argc > 1)
    lengths = {std::stoll(argv[1])};
  std::printf("# CPU attention, B=1, H=%lld, D=%lld, float32, %d intra-op threads\n\n",
              static_cast<long long>(heads), static_cast<long long>(headDim),
              at::get_num_threads());
  std::printf("| variant | S | ours ms | unfused ms | speed-up | ours extra peak MiB | unfused "
              "extra peak MiB |\n|---|---|---|---|---|---|---|\n");
  for (const std::string variant : {"softmax", "sigmoid"}) {
    for (int64_t length : lengths) {
      int reps = length >= 8192 ? 3 : 7;
      Measurement ours = measureInChild(true, variant, length, headDim, heads, reps);
      Measurement unfused = measureInChild(false, variant, length, headDim, heads, reps);
      std::printf("| %s | %lld | %.2f | %.2f | %.2fx | %.1f | %.1f |\n", variant.c_str(),
                  static_cast<long long>(length), ours.medianMs, unfused.medianMs,
                  unfused.medianMs / ours.medianMs, ours.extraPeakMiB, unfused.extraPeakMiB);
      std::fflush(stdout);
    }
  }
  return 0;
}
