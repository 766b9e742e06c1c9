// RUN: attn-opt %s --attn-cpu-fast-math | FileCheck %s

// exp2 as 2^round(x) * p(x - round(x)): the exponent goes straight into the float's bits,
// p is a degree-6 polynomial (six FMAs). The clamp to [-127, 128] makes the ends exact with no
// select: at n = -127 the biased exponent is 0, so the result is 0 (exp2(-inf) = 0 exactly);
// at n = 128 the bits are +inf. Only NaN needs a select to stay NaN. No libm call, on vectors
// and on scalars.
// CHECK-LABEL: func.func @exp2
// CHECK-NOT: math.exp2
// CHECK-DAG: %[[HIGH:.*]] = arith.constant dense<1.280000e+02> : vector<16xf32>
// CHECK-DAG: %[[LOW:.*]] = arith.constant dense<-1.270000e+02> : vector<16xf32>
// CHECK: %[[UPPER:.*]] = arith.minnumf %{{.*}}, %[[HIGH]]
// CHECK: %[[CLAMPED:.*]] = arith.maxnumf %[[UPPER]], %[[LOW]]
// CHECK: %[[N:.*]] = math.roundeven %[[CLAMPED]] : vector<16xf32>
// CHECK: %[[F:.*]] = arith.subf %[[CLAMPED]], %[[N]]
// CHECK-COUNT-6: math.fma
// CHECK: %[[E:.*]] = arith.fptosi %[[N]] : vector<16xf32> to vector<16xi32>
// CHECK: arith.shli
// CHECK: arith.bitcast {{.*}} : vector<16xi32> to vector<16xf32>
// CHECK-NOT: arith.cmpf olt
// CHECK-NOT: arith.cmpf ogt
// CHECK: arith.cmpf uno
// CHECK: math.roundeven %{{.*}} : f32
// CHECK-NOT: math.exp2
func.func @exp2(%x: vector<16xf32>, %y: f32) -> (vector<16xf32>, f32) {
  %e = math.exp2 %x : vector<16xf32>
  %s = math.exp2 %y : f32
  return %e, %s : vector<16xf32>, f32
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
