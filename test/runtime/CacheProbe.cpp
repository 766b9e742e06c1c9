// attn-cache-probe: asks the runtime for one variant's CPU kernels, runs its
// forward tile once and prints the JIT counters. The runtime tests start it as
// a separate process to observe the disk cache across restarts and between
// racing processes.
#include "runtime/CpuKernels.h"
#include "runtime/Jit.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char **argv) {
  attn::runtime::VariantSpec spec;
  std::vector<std::string> variants;
  for (int i = 1; i < argc; ++i) {
    std::string argument = argv[i];
    if (argument.rfind("--variant=", 0) == 0)
      variants.push_back(argument.substr(10));
    else if (argument.rfind("--head-dim=", 0) == 0)
      spec.headDim = spec.valueHeadDim = std::stoll(argument.substr(11));
    else if (argument == "--causal")
      spec.causal = true;
    else {
      std::fprintf(stderr, "usage: attn-cache-probe [--variant=V]... "
                           "[--head-dim=D] [--causal]\n");
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
    }
    attn::runtime::JitStatistics statistics = attn::runtime::Jit::instance().statistics();
    std::printf("compiles=%llu disk_hits=%llu memory_hits=%llu output=%s\n",
                static_cast<unsigned long long>(statistics.compiles),
                static_cast<unsigned long long>(statistics.diskHits),
                static_cast<unsigned long long>(statistics.memoryHits), finite ? "ok" : "bad");
    return finite ? 0 : 1;
  } catch (const std::exception &error) {
    std::fprintf(stderr, "attn-cache-probe: %s\n", error.what());
    return 1;
  }
}
