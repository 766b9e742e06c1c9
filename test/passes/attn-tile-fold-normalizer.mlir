// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile=fold-normalizer=true --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile --canonicalize --cse | FileCheck %s --check-prefix=OFF --enable-var-scope

// attn-tile's fold-normalizer (the CPU pipeline's): sigmoid(s + b) = 1 / (1 + 2^u) with
// u = -log2(e) s - log2(e) b. -log2(e) goes into the queries with the scale (1/8 * -1.4427 =
// -0.1803), -log2(e) b (b = -ln Sk by default: log2(e) ln Sk) is the score product's init, so
// the tile holds u and the folded tile_normalize computes 1 / (1 + 2^u) alone. The boundary
// mask comes after it and zeroes probabilities (fill 0) instead of writing -inf scores.
// CHECK-LABEL: func.func @sigmoid_fwd
// CHECK-SAME: (%[[Q:arg0]]: {{.*}}, %[[K:arg1]]: {{.*}}, %[[V:arg2]]: {{.*}}, %[[O:arg3]]: {{.*}}, %[[LSE:arg4]]: {{.*}}, %[[B:arg5]]: index, %[[H:arg6]]: index, %[[Q0:arg7]]: index)
// CHECK: %[[SK:.*]] = memref.dim %[[K]], %c2
// CHECK: %[[SKF:.*]] = arith.sitofp %{{.*}} : i64 to f32
// CHECK: %[[LN:.*]] = math.log %[[SKF]] : f32
// CHECK: %[[BIAS:.*]] = arith.negf %[[LN]] : f32
// CHECK: %[[OFFSET:.*]] = arith.mulf %[[BIAS]], %{{.*}} : f32
// CHECK: attn.tile_load %[[Q]][%[[B]], %[[H]], %[[Q0]]] rows %{{.*}} into %[[QT:.*]] {multiplier = -0.180336878 : f32}
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %{{.*}} step %c64
// CHECK: attn.tile_matmul %[[QT]], %{{.*}} into %[[S:[^ ]*]] extents(%{{.*}}) init %[[OFFSET]] :
// CHECK-NOT: attn.tile_mask
// CHECK: attn.tile_normalize %[[S]] rows %{{.*}} keys %[[SKF]] normalizer(#attn.sigmoid) {folded}
// CHECK: scf.if
// CHECK-NEXT: attn.tile_mask %[[S]] at %[[Q0]], %[[J]] lengths %{{.*}}, %[[SK]] {fill = 0.000000e+00 : f32}
// CHECK: attn.tile_matmul %[[S]], %{{.*}} {accumulate}
// OFF-LABEL: func.func @sigmoid_fwd
// OFF: {multiplier = 1.250000e-01 : f32}
// OFF-NOT: {{\) init %}}
// OFF: attn.tile_mask
// OFF-NOT: fill
// OFF: attn.tile_normalize {{.*}} normalizer(#attn.sigmoid) :
func.func @sigmoid(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// A constant bias folds to a constant init (3.5 log2(e) = 5.0494); causal masks come after
// the normalizer too.
// CHECK-LABEL: func.func @sigmoid_bias_causal_fwd
// CHECK: %[[OFFSET:.*]] = arith.constant 5.04943275 : f32
// CHECK: attn.tile_matmul {{.*}} init %[[OFFSET]] :
// CHECK: attn.tile_normalize {{.*}} {folded}
// CHECK: scf.if
// CHECK-NEXT: attn.tile_mask {{.*}} {causal, fill = 0.000000e+00 : f32}
func.func @sigmoid_bias_causal(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid<bias = -3.5>) {causal} : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Normalizers without a folded form are as without the option: softmax keeps its row state
// and its masks before it.
// CHECK-LABEL: func.func @softmax_fwd
// CHECK-NOT: {{\) init %}}
// CHECK: attn.tile_mask
// CHECK-NOT: fill
// CHECK: attn.tile_normalize {{.*}} normalizer(#attn.softmax) state
// CHECK-NOT: folded
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal} : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Under a score_mod the tile holds the mod's result, not the product: no fold.
// CHECK-LABEL: func.func @sigmoid_score_mod_fwd
// CHECK: {multiplier = 1.250000e-01 : f32}
// CHECK-NOT: {{\) init %}}
// CHECK: attn.tile_score_mod
// CHECK: attn.tile_normalize {{.*}} normalizer(#attn.sigmoid) :
func.func @sigmoid_score_mod(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %two = arith.constant 2.0 : f32
    %r = arith.mulf %s, %two : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x64xf32>
}

// -----

// A mask region writes -inf scores: no fold.
// CHECK-LABEL: func.func @sigmoid_mask_region_fwd
// CHECK-NOT: {{\) init %}}
// CHECK: attn.tile_mask_region
// CHECK: attn.tile_normalize {{.*}} normalizer(#attn.sigmoid) :
func.func @sigmoid_mask_region(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %length = arith.constant 256 : index
    %di = arith.divsi %i, %length : index
    %dj = arith.divsi %j, %length : index
    %same = arith.cmpi eq, %di, %dj : index
    attn.yield %same : i1
  }
  return %o : tensor<?x?x?x64xf32>
}
