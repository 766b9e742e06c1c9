// The machine's float32 FMA peak (register-only FMA chains, FmaPeak.h), for the whole process.
// Prints GFLOP/s; bench_baselines.py parses that one number. usage: attn-fma-peak [threads]
// [seconds]
#include "FmaPeak.h"

#include <cstdio>
#include <cstdlib>
#include <thread>

int main(int argc, char **argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : int(std::thread::hardware_concurrency());
  const double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  if (threads < 1 || seconds <= 0) {
    std::fprintf(stderr, "usage: attn-fma-peak [threads >= 1] [seconds > 0]\n");
    return 2;
  }
  const double gflops = attn::bench::measureFmaPeakGflops(threads, seconds);
  if (gflops <= 0) {
    std::fprintf(stderr, "attn-fma-peak: this CPU has neither AVX-512F nor AVX2+FMA\n");
    return 1;
  }
  std::printf("%.1f\n", gflops);
  return 0;
}
