// The machine's float32 FMA peak, measured: each thread runs 12 independent chains of vector
// FMAs on registers (enough to cover the FMA latency on current x86 cores), no memory traffic.
// Prints GFLOP/s for the whole process. usage: attn-fma-peak [threads] [seconds]
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {
#if defined(__AVX512F__)
using Vector = __m512;
constexpr int kLanes = 16;
inline Vector broadcast(float x) { return _mm512_set1_ps(x); }
inline Vector fma(Vector a, Vector b, Vector c) { return _mm512_fmadd_ps(a, b, c); }
inline float sum(Vector v) { return _mm512_reduce_add_ps(v); }
#else
using Vector = __m256;
constexpr int kLanes = 8;
inline Vector broadcast(float x) { return _mm256_set1_ps(x); }
inline Vector fma(Vector a, Vector b, Vector c) { return _mm256_fmadd_ps(a, b, c); }
inline float sum(Vector v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  return total;
}
#endif

constexpr int kChains = 12;
constexpr long kInnerIterations = 1 << 16;

/// Runs FMA chains for about `seconds`; returns the FLOPs done (2 per lane per FMA). The chains
/// are named locals, not an array, so that they stay in registers.
double runChains(double seconds, float *sink) {
  Vector c0 = broadcast(1.00f), c1 = broadcast(1.01f), c2 = broadcast(1.02f),
         c3 = broadcast(1.03f), c4 = broadcast(1.04f), c5 = broadcast(1.05f),
         c6 = broadcast(1.06f), c7 = broadcast(1.07f), c8 = broadcast(1.08f),
         c9 = broadcast(1.09f), c10 = broadcast(1.10f), c11 = broadcast(1.11f);
  const Vector multiplier = broadcast(0.999999f), addend = broadcast(1e-7f);
  double flops = 0;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
         seconds) {
    for (long iteration = 0; iteration < kInnerIterations; ++iteration) {
      c0 = fma(c0, multiplier, addend);
      c1 = fma(c1, multiplier, addend);
      c2 = fma(c2, multiplier, addend);
      c3 = fma(c3, multiplier, addend);
      c4 = fma(c4, multiplier, addend);
      c5 = fma(c5, multiplier, addend);
      c6 = fma(c6, multiplier, addend);
      c7 = fma(c7, multiplier, addend);
      c8 = fma(c8, multiplier, addend);
      c9 = fma(c9, multiplier, addend);
      c10 = fma(c10, multiplier, addend);
      c11 = fma(c11, multiplier, addend);
    }
    flops += 2.0 * kLanes * kChains * kInnerIterations;
  }
  *sink = sum(c0) + sum(c1) + sum(c2) + sum(c3) + sum(c4) + sum(c5) + sum(c6) + sum(c7) +
          sum(c8) + sum(c9) + sum(c10) + sum(c11); // keeps the chains alive
  return flops;
}
} // namespace

int main(int argc, char **argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : int(std::thread::hardware_concurrency());
  const double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  if (threads < 1 || seconds <= 0) {
    std::fprintf(stderr, "usage: attn-fma-peak [threads >= 1] [seconds > 0]\n");
    return 2;
  }
  std::vector<double> flops(threads);
  std::vector<float> sinks(threads);
  std::vector<std::thread> workers;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] { flops[t] = runChains(seconds, &sinks[t]); });
  for (auto &worker : workers)
    worker.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double total = 0;
  for (double f : flops)
    total += f;
  std::printf("%.1f\n", total / elapsed / 1e9);
  return 0;
}
