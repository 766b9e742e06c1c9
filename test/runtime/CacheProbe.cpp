// attn-cache-probe: asks the runtime for one variant's CPU kernels, runs its
// forward tile once and prints the JIT counters. The runtime tests start it as
// a separate process to observe the disk cache across restarts and between
// racing processes. For a built-in variant (softmax, sigmoid, relu, with or
// without a parameter) "output=ok" also means the tile matches float64 math, so
// code loaded from a cache entry is checked to be the right code.
// --exit-from-thread: the process exits from a thread other than main (the JIT's fallback
// exit drain, runtime/TieredObject.h).
#include "runtime/CpuKernels.h"
#include "runtime/Jit.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace {
/// The largest |o - reference| of a forward tile over `length` rows, or nullopt when the
/// variant is not a built-in one (mlir: variants are only checked to be finite).
std::optional<double> builtinError(const std::string &variant, bool causal, int64_t length,
                                   int64_t dim, const std::vector<float> &q,
                                   const std::vector<float> &k, const std::vector<float> &v,
                                   const std::vector<float> &o) {
  static const std::regex pattern(R"(^(softmax|sigmoid|relu)(?:\((bias|scale)=([-+0-9.eE]+)\))?$)");
  std::smatch match;
  if (!std::regex_match(variant, match, pattern))
    return std::nullopt;
  const std::string name = match[1];
  const bool hasParameter = match[3].matched;
  const double parameter = hasParameter ? std::stod(match[3]) : 0.0;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  double worst = 0.0;
  for (int64_t i = 0; i < length; ++i) {
    std::vector<double> p(length, 0.0);
    double top = -INFINITY;
    for (int64_t j = 0; j < length; ++j) {
      if (causal && j > i)
        continue;
      double s = 0.0;
      for (int64_t d = 0; d < dim; ++d)
        s += double(q[i * dim + d]) * double(k[j * dim + d]);
      p[j] = s * scale;
      top = std::max(top, p[j]);
    }
    double total = 0.0;
    for (int64_t j = 0; j < length; ++j) {
      if (causal && j > i) {
        p[j] = 0.0;
      } else if (name == "softmax") {
        p[j] = std::exp(p[j] - top);
        total += p[j];
      } else if (name == "sigmoid") {
        p[j] = 1.0 /
               (1.0 + std::exp(-(p[j] + (hasParameter ? parameter : -std::log(double(length))))));
      } else {
        p[j] = std::max(p[j], 0.0) * (hasParameter ? parameter : 1.0 / double(length));
      }
    }
    for (int64_t d = 0; d < dim; ++d) {
      double expected = 0.0;
      for (int64_t j = 0; j < length; ++j)
        expected += p[j] * double(v[j * dim + d]);
      if (name == "softmax")
        expected /= total;
      worst = std::max(worst, std::abs(expected - double(o[i * dim + d])));
    }
  }
  return worst;
}
} // namespace

int main(int argc, char **argv) {
  attn::runtime::VariantSpec spec;
  std::vector<std::string> variants;
  bool exitFromThread = false;
  for (int i = 1; i < argc; ++i) {
    std::string argument = argv[i];
    if (argument.rfind("--variant=", 0) == 0)
      variants.push_back(argument.substr(10));
    else if (argument.rfind("--head-dim=", 0) == 0)
      spec.headDim = spec.valueHeadDim = std::stoll(argument.substr(11));
    else if (argument == "--causal")
      spec.causal = true;
    else if (argument == "--exit-from-thread")
      exitFromThread = true;
    else {
      std::fprintf(stderr, "usage: attn-cache-probe [--variant=V]... "
                           "[--head-dim=D] [--causal] [--exit-from-thread]\n");
      return 2;
    }
  }
  if (variants.empty())
    variants.push_back("softmax");
  bool finite = true;
  try {
    for (const std::string &variant : variants) {
      spec.variant = variant;
      auto kernels = attn::runtime::getCpuKernels(spec);
      // One forward tile on 1 x 1 x 8 x D inputs: the loaded code must run, not
      // just link.
      const int64_t length = 8, dim = spec.headDim;
      std::vector<float> q(length * dim), k(length * dim), v(length * dim), o(length * dim, -1.0f),
          lse(length);
      for (size_t i = 0; i < q.size(); ++i) {
        q[i] = 0.01f * static_cast<float>(i % 17);
        k[i] = 0.02f * static_cast<float>(i % 13);
        v[i] = 0.03f * static_cast<float>(i % 11);
      }
      auto view4 = [&](std::vector<float> &data) {
        attn::runtime::View4 view;
        view.data = data.data();
        int64_t sizes[4] = {1, 1, length, dim};
        int64_t strides[4] = {length * dim, length * dim, dim, 1};
        std::memcpy(view.sizes, sizes, sizeof sizes);
        std::memcpy(view.strides, strides, sizeof strides);
        return view;
      };
      attn::runtime::View3 lseView;
      lseView.data = lse.data();
      lseView.sizes[0] = lseView.sizes[1] = 1;
      lseView.sizes[2] = length;
      lseView.strides[0] = lseView.strides[1] = length;
      lseView.strides[2] = 1;
      kernels->forwardTile(view4(q), view4(k), view4(v), view4(o), lseView, 0, 0, 0);
      for (float value : o)
        finite = finite && value == value && value != -1.0f;
      if (std::optional<double> error = builtinError(variant, spec.causal, length, dim, q, k, v, o);
          error && !(*error < 1e-4)) {
        std::fprintf(stderr, "attn-cache-probe: %s differs from float64 math by %g\n",
                     variant.c_str(), *error);
        finite = false;
      }
    }
    attn::runtime::JitStatistics statistics = attn::runtime::Jit::instance().statistics();
    std::printf("compiles=%llu disk_hits=%llu memory_hits=%llu output=%s\n",
                static_cast<unsigned long long>(statistics.compiles),
                static_cast<unsigned long long>(statistics.diskHits),
                static_cast<unsigned long long>(statistics.memoryHits), finite ? "ok" : "bad");
    if (exitFromThread) {
      std::fflush(stdout);
      std::thread([finite] { std::exit(finite ? 0 : 1); }).join();
    }
    return finite ? 0 : 1;
  } catch (const std::exception &error) {
    std::fprintf(stderr, "attn-cache-probe: %s\n", error.what());
    return 1;
  }
}
