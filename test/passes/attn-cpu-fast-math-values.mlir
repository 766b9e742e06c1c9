// exp2 and the logistic 1 / (1 + exp(y)) (and 1 / (1 + 2^u)) after attn-cpu-fast-math, run at the edges: +-inf,
// NaN, +-0, integers (exact), the overflow and the denormal range. The portable forms on
// every host; the AVX-512 forms (vreduceps / vscalefps / vrcp14ps) where the host has them.
// The inputs come through calls, so nothing folds at compile time.
// REQUIRES: mlir-runner
// RUN: attn-opt %s --attn-cpu-fast-math --convert-vector-to-scf --convert-scf-to-cf --attn-cpu-lower \
// RUN:   | mlir-runner -e main --entry-point-result=void --shared-libs=%mlir_c_runner_utils \
// RUN:   | FileCheck %s --check-prefix=PORTABLE
// RUN: %if avx512 %{ attn-opt %s --attn-cpu-fast-math=avx512=true --convert-vector-to-scf \
// RUN:   --convert-scf-to-cf --attn-cpu-lower \
// RUN:   | mlir-runner -e main --entry-point-result=void --shared-libs=%mlir_c_runner_utils \
// RUN:   | FileCheck %s --check-prefix=AVX512 %}

func.func @exp2(%x: vector<16xf32>) -> vector<16xf32> {
  %e = math.exp2 %x : vector<16xf32>
  return %e : vector<16xf32>
}

func.func @logistic(%y: vector<16xf32>) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %e = math.exp %y : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d : vector<16xf32>
  return %p : vector<16xf32>
}

// A folded normalizer's form, marked: its u is never +inf (see attn-cpu-fast-math.mlir).
func.func @logistic_base2(%u: vector<16xf32>) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %e = math.exp2 %u : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d {attn.no_positive_infinity} : vector<16xf32>
  return %p : vector<16xf32>
}

func.func @main() {
  // -inf, +inf, NaN, -0, 0, 1, -1, 0.5, 127, 128, 200, -126, -130, -149, -150, -1e30
  %x = arith.constant dense<[0xFF800000, 0x7F800000, 0x7FC00000, -0.0, 0.0, 1.0, -1.0, 0.5,
                             127.0, 128.0, 200.0, -126.0, -130.0, -149.0, -150.0, -1.0e30]>
       : vector<16xf32>
  %e = func.call @exp2(%x) : (vector<16xf32>) -> vector<16xf32>
  // The portable form flushes below 2^-126 to 0; vscalefps keeps the denormals (2^-150 is a
  // tie that rounds to even: 0).
  // PORTABLE: ( 0, inf, nan, 1, 1, 2, 0.5, 1.41421, 1.70141e+38, inf, inf, 1.17549e-38, 0, 0, 0, 0 )
  // AVX512: ( 0, inf, nan, 1, 1, 2, 0.5, 1.41421, 1.70141e+38, inf, inf, 1.17549e-38, 7.34684e-40, 1.4013e-45, 0, 0 )
  vector.print %e : vector<16xf32>
  // -inf, +inf, NaN, 0, 1, -1, 20, -20, 100, -100, 87, 89, 0.25, -0.25, 5, -5
  %y = arith.constant dense<[0xFF800000, 0x7F800000, 0x7FC00000, 0.0, 1.0, -1.0, 20.0, -20.0,
                             100.0, -100.0, 87.0, 89.0, 0.25, -0.25, 5.0, -5.0]>
       : vector<16xf32>
  %p = func.call @logistic(%y) : (vector<16xf32>) -> vector<16xf32>
  // Far right both give 0: the AVX-512 form where 1 + 2^t overflows to +inf (vrcp14ps 0).
  // PORTABLE: ( 1, 0, nan, 0.5, 0.268941, 0.731059, 2.06115e-09, 1, 0, 1, 1.64581e-38, 0, 0.437824, 0.562177, 0.00669285, 0.993307 )
  // AVX512: ( 1, 0, nan, 0.5, 0.268941, 0.731059, 2.06115e-09, 1, 0, 1, 1.64581e-38, 0, 0.437824, 0.562177, 0.00669285, 0.993307 )
  vector.print %p : vector<16xf32>
  // -inf, NaN, 0, 1, -1, 30, -30, 126, 127, 127.99, 128, 200, 1e30, FLT_MAX, -1e30, 0.5
  %u = arith.constant dense<[0xFF800000, 0x7FC00000, 0.0, 1.0, -1.0, 30.0, -30.0, 126.0, 127.0,
                             127.99, 128.0, 200.0, 1.0e30, 0x7F7FFFFF, -1.0e30, 0.5]>
       : vector<16xf32>
  %q = func.call @logistic_base2(%u) : (vector<16xf32>) -> vector<16xf32>
  // From u = 128 on, 1 + 2^u saturates at FLT_MAX on AVX-512 (no +inf to guard against):
  // p is then vrcp14ps(FLT_MAX) = 2^-128, against a true p of at most 2^-128 (0 in the
  // portable form, whose 2^u is +inf there).
  // PORTABLE: ( 1, nan, 0.5, 0.333333, 0.666667, 9.31323e-10, 1, 1.17549e-38, 5.87747e-39, 2.95918e-39, 0, 0, 0, 0, 1, 0.414214 )
  // AVX512: ( 1, nan, 0.5, 0.333333, 0.666667, 9.31323e-10, 1, 1.17549e-38, 5.87747e-39, 2.95918e-39, 2.93874e-39, 2.93874e-39, 2.93874e-39, 2.93874e-39, 1, 0.414214 )
  vector.print %q : vector<16xf32>
  return
}
