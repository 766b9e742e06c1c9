// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope

// Softmax: dQ recomputes p = exp2(s - lse) per key and applies dS = p (dP - delta); dK/dV
// loop over the query heads of the group, then over rows, accumulating p dO and dS q.
// CHECK-LABEL: func.func @softmax_bwd_dq
// CHECK-SAME: (%[[Q:arg0]]: {{.*}}, %[[K:arg1]]: {{.*}}, %[[V:arg2]]: {{.*}}, %[[DO:arg3]]: {{.*}}, %[[LSE:arg4]]: {{.*}}, %[[DELTA:arg5]]: {{.*}}, %[[DQ:arg6]]: {{.*}}, %{{.*}}: index, %{{.*}}: index, %{{.*}}: index)
// CHECK: scf.for
// CHECK: %[[ROWLSE:.*]] = memref.load %[[LSE]]
// CHECK: %[[ROWDELTA:.*]] = memref.load %[[DELTA]]
// CHECK: scf.for {{.*}} -> (vector<64xf32>)
// CHECK: %[[KROW:.*]] = vector.load %[[K]]
// CHECK: vector.load %[[V]]
// CHECK: %[[S:.*]] = vector.reduction <add>
// CHECK: %[[SH:.*]] = arith.subf %[[S]], %[[ROWLSE]]
// CHECK: %[[P:.*]] = math.exp2 %[[SH]]
// CHECK: %[[DP:.*]] = vector.reduction <add>
// CHECK: %[[C:.*]] = arith.subf %[[DP]], %[[ROWDELTA]]
// CHECK: %[[DS:.*]] = arith.mulf %[[P]], %[[C]]
// CHECK: %[[DSV:.*]] = vector.broadcast %[[DS]]
// CHECK: vector.fma %[[DSV]], %[[KROW]]
// CHECK: vector.store %{{.*}}, %[[DQ]]
// CHECK-LABEL: func.func @softmax_bwd_dkdv
// CHECK: scf.for %{{.*}} = %c0 to %[[GROUP:.*]] step %c1
// CHECK: scf.for
// CHECK: scf.if
// CHECK: math.exp2
// CHECK: vector.fma
// CHECK: vector.fma
// CHECK: func.func @softmax(
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Sigmoid: dS = p (1 - p) dP, with no lse and no delta read.
// CHECK-LABEL: func.func @sigmoid_bwd_dq
// CHECK-NOT: memref.load
// CHECK: scf.for {{.*}} -> (vector<32xf32>)
// CHECK: %[[E:.*]] = math.exp
// CHECK: %[[P:.*]] = arith.divf %{{.*}}, %{{.*}}
// CHECK: %[[DP:.*]] = vector.reduction <add>
// CHECK: %[[ONEMINUS:.*]] = arith.subf %{{.*}}, %[[P]]
// CHECK: %[[SLOPE:.*]] = arith.mulf %[[P]], %[[ONEMINUS]]
// CHECK: arith.mulf %[[SLOPE]], %[[DP]]
// CHECK-LABEL: func.func @sigmoid_bwd_dkdv
func.func @sigmoid(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid<bias = -2.0>) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// A custom normalizer is differentiated symbolically: d tanh(s) = 1 - tanh(s)^2.
// CHECK-LABEL: func.func @custom_bwd_dq
// CHECK: %[[T:.*]] = math.tanh
// CHECK: %[[T2:.*]] = arith.mulf %[[T]], %[[T]]
// CHECK: %[[NEG:.*]] = arith.negf %[[T2]]
// CHECK: %[[SLOPE:.*]] = arith.addf %[[NEG]], %{{.*}}
// CHECK: arith.mulf %[[SLOPE]], %{{.*}} : f32
func.func @custom(%q: tensor<?x?x?x16xf32>, %k: tensor<?x?x?x16xf32>, %v: tensor<?x?x?x16xf32>) -> tensor<?x?x?x16xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  }
  return %o : tensor<?x?x?x16xf32>
}

// -----

// An op without a derivative rule on the score's path is a diagnostic that names it.
func.func @not_differentiable(%q: tensor<?x?x?x16xf32>) -> tensor<?x?x?x16xf32> {
  // expected-error @+1 {{cannot differentiate 'math.floor'}}
  %o = attn.attention %q, %q, %q normalizer(#attn.custom) : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %f = math.floor %s : f32
    attn.yield %f : f32
  }
  return %o : tensor<?x?x?x16xf32>
}

// -----

// A score_mod's -inf gives p = 0 and dS = 0 before anything accumulates: exp2(s - lse) is NaN
// in a row with no allowed key (lse = -inf), and the mask's derivative must not leak either.
// CHECK-LABEL: func.func @masked_bwd_dq
// CHECK: %[[NEGINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK: scf.for {{.*}} -> (vector<32xf32>)
// CHECK: %[[S:.*]] = arith.select
// CHECK: %[[P:.*]] = math.exp2
// CHECK: %[[MASKED:.*]] = arith.cmpf oeq, %{{.*}}, %[[NEGINF]]
// CHECK: %[[DS:.*]] = arith.select %[[MASKED]], %{{.*}}, %{{.*}}
// CHECK: %[[DSV:.*]] = vector.broadcast %[[DS]]
// CHECK: vector.fma %[[DSV]]
// CHECK-LABEL: func.func @masked_bwd_dkdv
// CHECK: %[[P2:.*]] = math.exp2
// CHECK: arith.select %{{.*}}, %{{.*}}, %[[P2]]
// CHECK: vector.fma
func.func @masked(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %c64 = arith.constant 64 : index
    %ninf = arith.constant 0xFF800000 : f32
    %early = arith.cmpi ult, %j, %c64 : index
    %r = arith.select %early, %ninf, %s : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x32xf32>
}
