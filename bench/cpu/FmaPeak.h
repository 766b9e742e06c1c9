// The machine's float32 FMA peak, measured: each thread runs 12 independent chains of vector
// FMAs on registers (enough to cover the FMA latency on current x86 cores), no memory traffic.
// The widest ISA is chosen at run time (__builtin_cpu_supports), so that a binary built without
// -march=native still measures the host's peak. Shared by attn-fma-peak and attn-bench-cpu.
#ifndef BENCH_CPU_FMAPEAK_H
#define BENCH_CPU_FMAPEAK_H

#include <chrono>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTN_FMA_PEAK_X86 1
#endif

namespace attn::bench {
namespace fma_detail {

constexpr int kChains = 12;
constexpr long kInnerIterations = 1 << 16;

inline double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

#ifdef ATTN_FMA_PEAK_X86
// One body for both ISAs: the chains are named locals, not an array, so that they stay in
// registers (12 chains + 2 constants fit AVX2's 16 registers). Returns the FLOPs done (2 per
// lane per FMA); the lanes' sum goes to *sink so that the chains are not optimized away.
#define ATTN_FMA_CHAINS(Vec, lanes, set1, fmadd, add, storeu)                                      \
  Vec c0 = set1(1.00f), c1 = set1(1.01f), c2 = set1(1.02f), c3 = set1(1.03f), c4 = set1(1.04f),    \
      c5 = set1(1.05f), c6 = set1(1.06f), c7 = set1(1.07f), c8 = set1(1.08f), c9 = set1(1.09f),    \
      c10 = set1(1.10f), c11 = set1(1.11f);                                                        \
  const Vec multiplier = set1(0.999999f), addend = set1(1e-7f);                                    \
  double flops = 0;                                                                                \
  const auto start = std::chrono::steady_clock::now();                                             \
  while (secondsSince(start) < seconds) {                                                          \
    for (long iteration = 0; iteration < kInnerIterations; ++iteration) {                          \
      c0 = fmadd(c0, multiplier, addend);                                                          \
      c1 = fmadd(c1, multiplier, addend);                                                          \
      c2 = fmadd(c2, multiplier, addend);                                                          \
      c3 = fmadd(c3, multiplier, addend);                                                          \
      c4 = fmadd(c4, multiplier, addend);                                                          \
      c5 = fmadd(c5, multiplier, addend);                                                          \
      c6 = fmadd(c6, multiplier, addend);                                                          \
      c7 = fmadd(c7, multiplier, addend);                                                          \
      c8 = fmadd(c8, multiplier, addend);                                                          \
      c9 = fmadd(c9, multiplier, addend);                                                          \
      c10 = fmadd(c10, multiplier, addend);                                                        \
      c11 = fmadd(c11, multiplier, addend);                                                        \
    }                                                                                              \
    flops += 2.0 * (lanes)*kChains * kInnerIterations;                                             \
  }                                                                                                \
  Vec total = add(add(add(add(c0, c1), add(c2, c3)), add(add(c4, c5), add(c6, c7))),               \
                  add(add(c8, c9), add(c10, c11)));                                                \
  float laneValues[lanes];                                                                         \
  storeu(laneValues, total);                                                                       \
  float laneSum = 0;                                                                               \
  for (float value : laneValues)                                                                   \
    laneSum += value;                                                                              \
  *sink = laneSum;                                                                                 \
  return flops;

__attribute__((target("avx512f"))) inline double chainsAvx512(double seconds, float *sink) {
  ATTN_FMA_CHAINS(__m512, 16, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps)
}

__attribute__((target("avx2,fma"))) inline double chainsAvx2(double seconds, float *sink) {
  ATTN_FMA_CHAINS(__m256, 8, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps)
}
#undef ATTN_FMA_CHAINS
#endif

} // namespace fma_detail

/// The vector ISA the peak is measured with: "avx512f", "avx2" or "none" (no x86 FMA).
inline const char *fmaIsa() {
#ifdef ATTN_FMA_PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return "avx512f";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return "avx2";
#endif
  return "none";
}

/// The float32 FMA GFLOP/s of `threads` threads running the chains for about `seconds`, for the
/// whole process; 0 where the ISA is "none".
inline double measureFmaPeakGflops(int threads, double seconds) {
  const char *isa = fmaIsa();
  double (*chains)(double, float *) = nullptr;
#ifdef ATTN_FMA_PEAK_X86
  if (std::string_view(isa) == "avx512f")
    chains = fma_detail::chainsAvx512;
  else if (std::string_view(isa) == "avx2")
    chains = fma_detail::chainsAvx2;
#endif
  if (!chains || threads < 1)
    return 0;
  std::vector<double> flops(threads);
  std::vector<float> sinks(threads);
  std::vector<std::thread> workers;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] { flops[t] = chains(seconds, &sinks[t]); });
  for (auto &worker : workers)
    worker.join();
  const double elapsed = fma_detail::secondsSince(start);
  double total = 0;
  for (double f : flops)
    total += f;
  return total / elapsed / 1e9;
}

} // namespace attn::bench

#endif // BENCH_CPU_FMAPEAK_H
