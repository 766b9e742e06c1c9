// RUN: attn-opt %s --canonicalize --split-input-file | FileCheck %s --enable-var-scope

// A custom body that is relu(s) * c becomes #attn.relu<scale = c>.
// CHECK-LABEL: func.func @custom_relu_is_relu
// CHECK: normalizer(#attn.relu<scale = 2.500000e-01>)
// CHECK-NOT: normalizer_body
func.func @custom_relu_is_relu(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %zero = arith.constant 0.0 : f32
    %quarter = arith.constant 0.25 : f32
    %r = arith.maximumf %s, %zero : f32
    %p = arith.mulf %quarter, %r : f32
    attn.yield %p : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// 1 / (1 + exp(-(s + b))) is #attn.sigmoid<bias = b>.
// CHECK-LABEL: func.func @custom_sigmoid_is_sigmoid
// CHECK: normalizer(#attn.sigmoid<bias = -3.000000e+00>)
// CHECK-NOT: normalizer_body
func.func @custom_sigmoid_is_sigmoid(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %one = arith.constant 1.0 : f32
    %b = arith.constant -3.0 : f32
    %x = arith.addf %s, %b : f32
    %n = arith.negf %x : f32
    %e = math.exp %n : f32
    %d = arith.addf %e, %one : f32
    %p = arith.divf %one, %d : f32
    attn.yield %p : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// Not a known form (tanh): stays custom.
// CHECK-LABEL: func.func @custom_tanh_stays
// CHECK: normalizer(#attn.custom)
// CHECK: normalizer_body
// CHECK: math.tanh
func.func @custom_tanh_stays(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// A negative factor is not a relu scale: stays custom.
// CHECK-LABEL: func.func @custom_negative_relu_stays
// CHECK: normalizer(#attn.custom)
func.func @custom_negative_relu_stays(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %zero = arith.constant 0.0 : f32
    %neg = arith.constant -1.0 : f32
    %r = arith.maximumf %s, %zero : f32
    %p = arith.mulf %r, %neg : f32
    attn.yield %p : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// CHECK-LABEL: func.func @identity_score_mod_dropped
// CHECK: attn.attention
// CHECK-NOT: score_mod
func.func @identity_score_mod_dropped(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    attn.yield %s : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// A mask region yielding true masks nothing and is dropped; one yielding false stays (it
// masks everything).
// CHECK-LABEL: func.func @always_true_mask_dropped
// CHECK: attn.attention
// CHECK-NOT: mask {
func.func @always_true_mask_dropped(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %true = arith.constant true
    attn.yield %true : i1
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// CHECK-LABEL: func.func @always_false_mask_kept
// CHECK: mask {
// CHECK: arith.constant false
func.func @always_false_mask_kept(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %false = arith.constant false
    attn.yield %false : i1
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

// s * 2 folds into the scale: 2 / sqrt(16) = 0.5 when no scale was given ...
// CHECK-LABEL: func.func @constant_score_mod_folds_into_scale
// CHECK: attn.attention {{.*}} {scale = 5.000000e-01 : f32}
// CHECK-NOT: score_mod
// ... and 2 * 0.125 = 0.25 when one was.
// CHECK: attn.attention {{.*}} {scale = 2.500000e-01 : f32}
// CHECK-NOT: score_mod
func.func @constant_score_mod_folds_into_scale(%q: tensor<1x2x8x16xf32>) -> (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %two = arith.constant 2.0 : f32
    %r = arith.mulf %s, %two : f32
    attn.yield %r : f32
  }
  %p = attn.attention %q, %q, %q normalizer(#attn.softmax) {scale = 0.125 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %two = arith.constant 2.0 : f32
    %r = arith.mulf %two, %s : f32
    attn.yield %r : f32
  }
  return %o, %p : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>
}

// -----

// A window stays even where it covers the static lengths: the runtime calls one kernel at
// every length, so a rewrite justified by the sizes in the types would be wrong at others.
// CHECK-LABEL: func.func @covering_window_kept
// CHECK: attn.attention {{.*}} {causal, window = 8 : i64}
// CHECK: attn.attention {{.*}} {causal, window = 4 : i64}
// CHECK: attn.attention {{.*}} {window = 100 : i64}
func.func @covering_window_kept(%q: tensor<1x2x8x16xf32>, %d: tensor<1x2x?x16xf32>) -> (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) {
  %a = attn.attention %q, %q, %q normalizer(#attn.softmax) {causal, window = 8} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  %b = attn.attention %q, %q, %q normalizer(#attn.softmax) {causal, window = 4} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  %c = attn.attention %q, %d, %d normalizer(#attn.softmax) {window = 100} : tensor<1x2x8x16xf32>, tensor<1x2x?x16xf32>, tensor<1x2x?x16xf32> -> tensor<1x2x8x16xf32>
  return %a, %b, %c : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>
}

// -----

// In evaluation mode u is not updated: uses of updated_u read u.
// CHECK-LABEL: func.func @eval_reparam_forwards_u
// CHECK-SAME: %[[U:[^:]+]]: tensor<64xf32>
// CHECK: %[[Y:.*]], %{{.*}} = attn.reparam_linear
// CHECK: return %[[Y]], %[[U]]
func.func @eval_reparam_forwards_u(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %g: tensor<f32>, %u: tensor<64xf32>) -> (tensor<4x32xf32>, tensor<64xf32>) {
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>, tensor<64xf32>
  return %y, %u2 : tensor<4x32xf32>, tensor<64xf32>
}

// -----

// CHECK-LABEL: func.func @training_reparam_keeps_update
// CHECK: %[[Y:.*]], %[[U2:.*]] = attn.reparam_linear
// CHECK: return %[[Y]], %[[U2]]
func.func @training_reparam_keeps_update(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %g: tensor<f32>, %u: tensor<64xf32>) -> (tensor<4x32xf32>, tensor<64xf32>) {
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) {training} : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>, tensor<64xf32>
  return %y, %u2 : tensor<4x32xf32>, tensor<64xf32>
}

// -----

// A dimension read at a negative index is undefined: ub.poison. Before the attn dialect's
// pattern, any canonicalizer run with the gpu dialect loaded (here by gpu.barrier, in our GPU
// pipeline by the kernels) crashed on it: MLIR's SimplifyDimOfAllocOp indexes the shape with it
// unchecked. The index is negative only after folding, as a fuzzer input had it.
// CHECK-LABEL: func.func @dim_at_a_negative_index
// CHECK-NOT: memref.dim
// CHECK-NOT: tensor.dim
// CHECK: %[[POISON:.*]] = ub.poison : index
// CHECK: return %[[POISON]], %[[POISON]]
func.func @dim_at_a_negative_index(%m: memref<?xf32>, %t: tensor<?xf32>, %q: tensor<1x2x8x16xf32>) -> (index, index, tensor<1x2x8x16xf32>) {
  gpu.barrier
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %minus_two = arith.subi %c0, %c2 : index
  %d = memref.dim %m, %minus_two : memref<?xf32>
  %e = tensor.dim %t, %minus_two : tensor<?xf32>
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %d, %e, %o : index, index, tensor<1x2x8x16xf32>
}

// -----

// A dimension in range stays for the dim ops' own folds.
// CHECK-LABEL: func.func @dim_in_range
// CHECK: memref.dim %{{.*}}, %c0
// CHECK-NOT: ub.poison
func.func @dim_in_range(%m: memref<?xf32>, %q: tensor<1x2x8x16xf32>) -> (index, tensor<1x2x8x16xf32>) {
  %c0 = arith.constant 0 : index
  %d = memref.dim %m, %c0 : memref<?xf32>
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %d, %o : index, tensor<1x2x8x16xf32>
}
