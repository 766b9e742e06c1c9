// attn-cpu-fast-math=avx512 (per16Lanes, passes/CpuFastMath.cpp): a logistic on a vector of
// 2^31 lanes was split into 2^27 slices of 16 (libFuzzer: timeout; local run of 2026-12-03).
// Fixed: the AVX-512 forms take at most 4096 lanes, wider vectors keep the portable polynomial
// (lit test in test/passes/attn-cpu-fast-math.mlir). Kept as a seed of scripts/fuzz.sh.
func.func @logistic(%s: vector<2147483648xf32>, %b: vector<2147483648xf32>) -> vector<2147483648xf32> {
  %one = arith.constant dense<1.0> : vector<2147483648xf32>
  %shifted = arith.addf %s, %b : vector<2147483648xf32>
  %negated = arith.negf %shifted : vector<2147483648xf32>
  %e = math.exp %negated : vector<2147483648xf32>
  %d = arith.addf %one, %e : vector<2147483648xf32>
  %p = arith.divf %one, %d : vector<2147483648xf32>
  return %p : vector<2147483648xf32>
}
