// RUN: attn-opt %s --attn-cpu-fast-math | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --attn-cpu-fast-math=avx512=true \
// RUN:   | FileCheck %s --enable-var-scope --check-prefix=AVX512

// exp2 as 2^floor(x) * p(x - floor(x)): the exponent goes straight into the float's bits,
// p is a degree-5 polynomial (five FMAs). The clamp to [-127, 128] makes the ends exact with no
// select: at n = -127 the biased exponent is 0, so the result is 0 (exp2(-inf) = 0 exactly);
// at n = 128 the bits are +inf. Only NaN needs a select to stay NaN. No libm call, on vectors
// and on scalars. Without avx512 (AVX2 and 4-lane kernels) no x86vector op or intrinsic.
// CHECK-LABEL: func.func @exp2
// CHECK-NOT: math.exp2
// CHECK-DAG: %[[HIGH:.*]] = arith.constant dense<1.280000e+02> : vector<16xf32>
// CHECK-DAG: %[[LOW:.*]] = arith.constant dense<-1.270000e+02> : vector<16xf32>
// CHECK: %[[UPPER:.*]] = arith.minnumf %{{.*}}, %[[HIGH]]
// CHECK: %[[CLAMPED:.*]] = arith.maxnumf %[[UPPER]], %[[LOW]]
// CHECK: %[[N:.*]] = math.floor %[[CLAMPED]] : vector<16xf32>
// CHECK: %[[F:.*]] = arith.subf %[[CLAMPED]], %[[N]]
// CHECK-COUNT-5: math.fma {{.*}}%[[F]]
// CHECK-NOT: math.fma
// CHECK: %[[E:.*]] = arith.fptosi %[[N]] : vector<16xf32> to vector<16xi32>
// CHECK: arith.shli
// CHECK: arith.bitcast {{.*}} : vector<16xi32> to vector<16xf32>
// CHECK-NOT: arith.cmpf olt
// CHECK-NOT: arith.cmpf ogt
// CHECK: arith.cmpf uno
// CHECK: math.floor %{{.*}} : f32
// CHECK-NOT: math.exp2
// CHECK-NOT: x86vector
// CHECK-NOT: llvm.call_intrinsic
// CHECK: return

// With avx512, 16 lanes (and each 16-lane slice of a wider row) take vreduceps (x - floor(x)),
// five FMAs and vscalefps (p * 2^floor(x)): no clamps, no exponent bits, no NaN select.
// Scalars (the online softmax's correction) and 8 lanes stay portable.
// AVX512-LABEL: func.func @exp2
// AVX512-NOT: arith.minnumf {{.*}}vector<16xf32>
// AVX512: %[[F:.*]] = llvm.call_intrinsic "llvm.x86.avx512.mask.reduce.ps.512"(%[[X:[^,]*]], %{{.*}})
// AVX512-COUNT-5: math.fma {{.*}}%[[F]]
// AVX512-NOT: arith.cmpf
// AVX512: x86vector.avx512.mask.scalef %[[P:[^,]*]], %[[X]], %[[P]], %{{.*}} : vector<16xf32>
// AVX512-NOT: arith.cmpf uno, {{.*}}vector<16xf32>
// AVX512: math.floor %{{.*}} : f32
// AVX512: arith.cmpf uno, {{.*}} : f32
// AVX512: math.floor %{{.*}} : vector<8xf32>
// AVX512-NOT: x86vector
// AVX512: return
func.func @exp2(%x: vector<16xf32>, %y: f32, %z: vector<8xf32>) -> (vector<16xf32>, f32, vector<8xf32>) {
  %e = math.exp2 %x : vector<16xf32>
  %s = math.exp2 %y : f32
  %w = math.exp2 %z : vector<8xf32>
  return %e, %s, %w : vector<16xf32>, f32, vector<8xf32>
}

// A 32-lane row: two 16-lane slices, each reduce -> scalef, put back together.
// AVX512-LABEL: func.func @exp2_row
// AVX512: %[[LO:.*]] = vector.extract_strided_slice %{{.*}} {offsets = [0], sizes = [16]
// AVX512: llvm.call_intrinsic "llvm.x86.avx512.mask.reduce.ps.512"(%[[LO]]
// AVX512: x86vector.avx512.mask.scalef
// AVX512: vector.insert_strided_slice {{.*}} {offsets = [0]
// AVX512: %[[HI:.*]] = vector.extract_strided_slice %{{.*}} {offsets = [16], sizes = [16]
// AVX512: llvm.call_intrinsic "llvm.x86.avx512.mask.reduce.ps.512"(%[[HI]]
// AVX512: x86vector.avx512.mask.scalef
// AVX512: vector.insert_strided_slice {{.*}} {offsets = [16]
// AVX512-NOT: math.exp2
func.func @exp2_row(%x: vector<32xf32>) -> vector<32xf32> {
  %e = math.exp2 %x : vector<32xf32>
  return %e : vector<32xf32>
}

// exp (sigmoid) and tanh (its fast form, custom bodies) through MLIR's polynomial
// approximations.
// CHECK-LABEL: func.func @exp_tanh
// CHECK-NOT: math.exp {{.*}}vector
// CHECK-NOT: math.tanh
func.func @exp_tanh(%x: vector<64xf32>) -> vector<64xf32> {
  %e = math.exp %x : vector<64xf32>
  %t = math.tanh %e : vector<64xf32>
  return %t : vector<64xf32>
}

// Sigmoid's probability 1 / (1 + exp(-(s + b))). Portable: exp's polynomial and a division.
// With avx512: t = s * -log2(e) + b * -log2(e) (the negation folded into the factor, one
// FMA), exp2 as above, d = 1 + 2^t, vrcp14ps and one Newton step on min(d, FLT_MAX) (vminps
// keeps NaN): 0 where d is +inf, no division.
// CHECK-LABEL: func.func @logistic
// CHECK: arith.divf
// CHECK-NOT: llvm.call_intrinsic
// AVX512-LABEL: func.func @logistic
// AVX512-DAG: %[[LIMIT:.*]] = arith.constant dense<3.40282347E+38> : vector<16xf32>
// AVX512-DAG: %[[FACTOR:.*]] = arith.constant dense<-1.44269502> : vector<16xf32>
// AVX512: %[[BIAS:.*]] = arith.mulf %{{.*}}, %[[FACTOR]]
// AVX512: %[[T:.*]] = math.fma %{{.*}}, %[[FACTOR]], %[[BIAS]]
// AVX512: llvm.call_intrinsic "llvm.x86.avx512.mask.reduce.ps.512"(%[[T]],
// AVX512-COUNT-5: math.fma
// AVX512: %[[E:.*]] = x86vector.avx512.mask.scalef
// AVX512: %[[D:.*]] = arith.addf %[[E]], %{{.*}}
// AVX512: %[[R:.*]] = llvm.call_intrinsic "llvm.x86.avx512.rcp14.ps.512"(%[[D]],
// AVX512: %[[FINITE:.*]] = llvm.call_intrinsic "llvm.x86.avx512.min.ps.512"(%[[LIMIT]], %[[D]],
// AVX512: %[[NEG:.*]] = arith.negf %[[FINITE]]
// AVX512: %[[RESIDUAL:.*]] = math.fma %[[NEG]], %[[R]], %{{.*}}
// AVX512: %[[P:.*]] = math.fma %[[R]], %[[RESIDUAL]], %[[R]]
// AVX512-NOT: arith.divf
// AVX512: return %[[P]]
func.func @logistic(%s: vector<16xf32>, %b: vector<16xf32>) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %shifted = arith.addf %s, %b : vector<16xf32>
  %negated = arith.negf %shifted : vector<16xf32>
  %e = math.exp %negated : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d : vector<16xf32>
  return %p : vector<16xf32>
}

// The lowering's masked-score select around the logistic: with avx512 it goes where the bias
// is never +inf or NaN (a finite constant, -ln of a count), since the logistic is then exactly
// 0 at s = -inf; it stays for a bias it cannot vouch for, and in the portable form.
// CHECK-LABEL: func.func @logistic_masked
// CHECK: arith.select
// AVX512-LABEL: func.func @logistic_masked
// AVX512-NOT: arith.cmpf
// AVX512-NOT: arith.select
// AVX512: llvm.call_intrinsic "llvm.x86.avx512.rcp14.ps.512"
// AVX512-NOT: arith.select
// AVX512: return
func.func @logistic_masked(%s: vector<16xf32>, %n: i64) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %zero = arith.constant dense<0.0> : vector<16xf32>
  %ninf = arith.constant dense<0xFF800000> : vector<16xf32>
  %count = arith.sitofp %n : i64 to f32
  %log = math.log %count : f32
  %bias = arith.negf %log : f32
  %b = vector.broadcast %bias : f32 to vector<16xf32>
  %shifted = arith.addf %s, %b : vector<16xf32>
  %negated = arith.negf %shifted : vector<16xf32>
  %e = math.exp %negated : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d : vector<16xf32>
  %masked = arith.cmpf oeq, %s, %ninf : vector<16xf32>
  %r = arith.select %masked, %zero, %p : vector<16xi1>, vector<16xf32>
  return %r : vector<16xf32>
}

// AVX512-LABEL: func.func @logistic_masked_unknown_bias
// AVX512: arith.cmpf oeq
// AVX512: arith.select
func.func @logistic_masked_unknown_bias(%s: vector<16xf32>, %b: vector<16xf32>) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %zero = arith.constant dense<0.0> : vector<16xf32>
  %ninf = arith.constant dense<0xFF800000> : vector<16xf32>
  %shifted = arith.addf %s, %b : vector<16xf32>
  %negated = arith.negf %shifted : vector<16xf32>
  %e = math.exp %negated : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d : vector<16xf32>
  %masked = arith.cmpf oeq, %s, %ninf : vector<16xf32>
  %r = arith.select %masked, %zero, %p : vector<16xi1>, vector<16xf32>
  return %r : vector<16xf32>
}

// A folded normalizer's logistic 1 / (1 + 2^u) (attn-tile's fold-normalizer: -log2(e) in the
// queries, -log2(e) b in the product's init): u goes to vreduceps as it is, no FMA before.
// Marked attn.no_positive_infinity (its masks come after it), 2^u saturates at FLT_MAX
// (vscalefps rounding toward zero, 11) and the min before the Newton step goes: 11 vector ops
// per 16 scores instead of 13. Unmarked, the guard stays and vscalefps rounds as the MXCSR says.
// CHECK-LABEL: func.func @logistic_base2
// CHECK: arith.divf
// AVX512-LABEL: func.func @logistic_base2
// AVX512-SAME: (%[[U:.*]]: vector<16xf32>)
// AVX512-NOT: arith.mulf
// AVX512: %[[F:.*]] = llvm.call_intrinsic "llvm.x86.avx512.mask.reduce.ps.512"(%[[U]],
// AVX512-COUNT-5: math.fma
// AVX512: %[[E:.*]] = x86vector.avx512.mask.scalef %{{.*}}, %[[U]], %{{.*}}, %{{.*}}, %c11_i32
// AVX512: %[[D:.*]] = arith.addf %[[E]], %{{.*}}
// AVX512: %[[R:.*]] = llvm.call_intrinsic "llvm.x86.avx512.rcp14.ps.512"(%[[D]],
// AVX512-NOT: min.ps
// AVX512: %[[NEG:.*]] = arith.negf %[[D]]
// AVX512: %[[RESIDUAL:.*]] = math.fma %[[NEG]], %[[R]], %{{.*}}
// AVX512: %[[P:.*]] = math.fma %[[R]], %[[RESIDUAL]], %[[R]]
// AVX512-NOT: arith.divf
// AVX512: return %[[P]]
func.func @logistic_base2(%u: vector<16xf32>) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %e = math.exp2 %u : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d {attn.no_positive_infinity} : vector<16xf32>
  return %p : vector<16xf32>
}

// AVX512-LABEL: func.func @logistic_base2_unmarked
// AVX512: x86vector.avx512.mask.scalef %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %c4_i32
// AVX512: llvm.call_intrinsic "llvm.x86.avx512.min.ps.512"
func.func @logistic_base2_unmarked(%u: vector<16xf32>) -> vector<16xf32> {
  %one = arith.constant dense<1.0> : vector<16xf32>
  %e = math.exp2 %u : vector<16xf32>
  %d = arith.addf %one, %e : vector<16xf32>
  %p = arith.divf %one, %d : vector<16xf32>
  return %p : vector<16xf32>
}

// Past 4096 lanes the AVX-512 forms, which split into 16-lane slices, give way to the portable
// polynomial (one op per step at any width): a fuzzer input of 2^31 lanes hung the pass.
// AVX512-LABEL: func.func @wider_than_split
// AVX512-NOT: x86vector
// AVX512-NOT: vector.extract_strided_slice
// AVX512: arith.bitcast {{.*}} : vector<2147483648xi32> to vector<2147483648xf32>
// AVX512-NOT: x86vector
// AVX512: return
func.func @wider_than_split(%u: vector<2147483648xf32>) -> vector<2147483648xf32> {
  %one = arith.constant dense<1.0> : vector<2147483648xf32>
  %e = math.exp2 %u : vector<2147483648xf32>
  %d = arith.addf %one, %e : vector<2147483648xf32>
  %p = arith.divf %one, %d : vector<2147483648xf32>
  return %p : vector<2147483648xf32>
}

// At 4096 lanes it still splits.
// AVX512-LABEL: func.func @widest_split
// AVX512-COUNT-256: x86vector.avx512.mask.scalef
// AVX512-NOT: x86vector.avx512.mask.scalef
// AVX512: return
func.func @widest_split(%u: vector<4096xf32>) -> vector<4096xf32> {
  %e = math.exp2 %u : vector<4096xf32>
  return %e : vector<4096xf32>
}
