// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward --attn-lower-tiles-cpu --verify-diagnostics --canonicalize --cse | FileCheck %s --check-prefix=LOWER --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward=capture-gradients=true --verify-diagnostics --canonicalize --cse | FileCheck %s --check-prefix=CAPGRAD --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward=block-map=true --verify-diagnostics --canonicalize --cse | FileCheck %s --check-prefix=MAP --enable-var-scope

// The backward is the forward's tile IR plus the gradient tiles. dQ, per query tile over key
// blocks: S = Q K^T, mask (boundary blocks), P from S and the LSE, dP = dO V^T, dS from the
// normalizer (softmax's row term is delta), dQ += dS K; the scale is applied on the store.
// CHECK-LABEL: func.func @softmax_bwd_dq
// CHECK-SAME: (%[[Q:arg0]]: {{.*}}, %[[K:arg1]]: {{.*}}, %[[V:arg2]]: {{.*}}, %[[DO:arg3]]: {{.*}}, %[[LSE:arg4]]: {{.*}}, %[[DELTA:arg5]]: {{.*}}, %[[DQ:arg6]]: {{.*}}, %{{.*}}: index, %{{.*}}: index, %{{.*}}: index)
// CHECK: attn.tile_load %[[Q]]{{.*}} into %[[QT:.*]] {multiplier = 0.180336878 : f32}
// CHECK: attn.tile_load %[[DO]]{{.*}} into %[[DOT:[^ ]*]] :
// CHECK: attn.tile_load %[[LSE]]{{.*}} into %[[ROWLSE:[^ ]*]] :
// CHECK: attn.tile_load %[[DELTA]]{{.*}} into %[[ROWDELTA:[^ ]*]] :
// CHECK: scf.for
// CHECK: attn.tile_load %[[K]]{{.*}} into %[[KT:.*]] {transpose}
// CHECK: attn.tile_load %[[K]]{{.*}} into %[[KROWS:[^ ]*]] :
// CHECK: attn.tile_load %[[V]]{{.*}} into %[[VT:.*]] {transpose}
// CHECK: attn.tile_matmul %[[QT]], %[[KT]] into %[[S:[^ ]*]] extents
// CHECK: attn.tile_matmul %[[DOT]], %[[VT]] into %[[DS:[^ ]*]] extents
// CHECK: attn.tile_mask %[[S]]
// CHECK: attn.tile_probabilities %[[S]] rows %{{.*}} lse %[[ROWLSE]] : {{.*}} into %[[P:[^ ]*]] normalizer(#attn.softmax)
// CHECK: attn.tile_score_gradient %[[S]], %[[P]], %[[DS]] rows %{{.*}} row_term %[[ROWDELTA]]
// CHECK: attn.tile_matmul %[[DS]], %[[KROWS]] into %[[DQT:[^ ]*]] {{.*}}{accumulate}
// CHECK: }
// CHECK: attn.tile_store %[[DQT]] {{.*}} into %[[DQ]]{{.*}} {multiplier = 1.250000e-01 : f32}
// dK/dV, per key tile: one flat loop over (query head of the group, query block) pairs;
// dV += P^T dO and dK += dS^T Q, so GQA is summed without atomics.
// CHECK-LABEL: func.func @softmax_bwd_dkdv
// CHECK: %[[PAIRS:.*]] = arith.muli %{{.*}}, %{{.*}} : index
// CHECK: scf.for %[[N:.*]] = %c0 to %[[PAIRS]] step %c1
// CHECK: %[[MEMBER:.*]] = arith.divsi %[[N]], %[[PER_HEAD:.*]] : index
// CHECK: arith.remsi %[[N]], %[[PER_HEAD]] : index
// CHECK-NOT: scf.for
// CHECK: attn.tile_matmul {{.*}} {alpha = 0.180336878 : f32}
// CHECK: attn.tile_probabilities
// CHECK: attn.tile_score_gradient
// CHECK: attn.tile_matmul %[[P2:.*]], %{{.*}} into %{{.*}} {accumulate, transpose_lhs}
// CHECK: attn.tile_matmul %{{.*}}, %{{.*}} into %{{.*}} {accumulate, transpose_lhs}
// CHECK: func.func @softmax(

// Lowered for the CPU, the softmax probabilities are exp2(s - lse) over a whole score row,
// 0 where a score is masked; dS = p (dP - delta).
// LOWER-LABEL: func.func @softmax_bwd_dq
// LOWER: math.exp2 {{.*}} : vector<64xf32>
// LOWER: arith.select {{.*}} : vector<64xi1>, vector<64xf32>
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Sigmoid: dS = p (1 - p) dP, with no lse and no delta read.
// CHECK-LABEL: func.func @sigmoid_bwd_dq
// CHECK-NOT: lse
// CHECK: attn.tile_probabilities %{{.*}} rows %{{.*}} keys %{{.*}} into %[[P:[^ ]*]] normalizer(#attn.sigmoid<bias = -2.000000e+00>)
// CHECK: attn.tile_score_gradient %{{.*}}, %[[P]], %{{.*}} rows %{{.*}} keys
func.func @sigmoid(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid<bias = -2.0>) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// A custom normalizer is differentiated symbolically, over a whole score row on the CPU:
// d tanh(s) = 1 - tanh(s)^2.
// CHECK-LABEL: func.func @custom_bwd_dq
// CHECK: attn.tile_score_gradient {{.*}} normalizer(#attn.custom) : memref<32x64xf32> normalizer_body {
// CHECK: math.tanh
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

// An op without a derivative rule on the score's path is a diagnostic that names it, from
// attn-derive-backward itself.
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

// A score_mod's -inf gives p = 0 and dS = 0 (exp2(s - lse) is NaN in a row with no allowed
// key, and the mask's derivative must not leak either): the score_mod tile op also writes its
// derivative, which multiplies dS before the masked select.
// CHECK-LABEL: func.func @masked_bwd_dq
// CHECK: attn.tile_score_mod %[[S:[^ ]*]] {{.*}} derivative %[[DMOD:[^ ]*]] :
// CHECK: attn.tile_score_gradient %[[S]], {{.*}} derivative %[[DMOD]]
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

// -----

// kv_lengths: both backward kernels take the lengths after their views and bound the keys by
// the batch's own length; the dK/dV kernel of a key block wholly past it runs no query block
// (its rows stay unwritten: the caller zero-fills them).
// CHECK-LABEL: func.func @ragged_bwd_dq
// CHECK-SAME: %[[LENGTHS:arg7]]: memref<?xi64>, %[[B:arg8]]: index
// CHECK: memref.load %[[LENGTHS]][%[[B]]]
// CHECK-LABEL: func.func @ragged_bwd_dkdv
// CHECK-SAME: %[[LENGTHS:arg8]]: memref<?xi64>, %[[B:arg9]]: index, %{{.*}}: index, %[[K0:arg11]]: index
// CHECK: %[[GIVEN:.*]] = memref.load %[[LENGTHS]][%[[B]]]
// CHECK: %[[LEN:.*]] = arith.minsi
// CHECK: %[[LEFT:.*]] = arith.subi %[[LEN]], %[[K0]]
// CHECK: %[[KEYS:.*]] = arith.maxsi %{{.*}}, %c0
// CHECK: %[[ANY:.*]] = arith.cmpi sgt, %[[KEYS]], %c0
// CHECK: %[[BLOCKS:.*]] = arith.select %[[ANY]], %{{.*}}, %c0
// CHECK: scf.for %{{.*}} = %c0 to %[[BLOCKS]] step %c1
func.func @ragged(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>, %lengths: tensor<?xi32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v kv_lengths(%lengths : tensor<?xi32>) normalizer(#attn.softmax) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// A mask region: the dQ kernel classifies each key block and the dK/dV kernel each query
// block of its loop; empty blocks are skipped, partial ones masked by the region.
// CHECK-LABEL: func.func @prefix_lm_bwd_dq
// CHECK: scf.for
// CHECK: %[[KIND:.*]] = attn.tile_mask_classify
// CHECK: scf.if
// CHECK: attn.tile_mask_region
// CHECK: attn.tile_score_gradient
// CHECK-LABEL: func.func @prefix_lm_bwd_dkdv
// CHECK: scf.for
// CHECK: %[[KIND:.*]] = attn.tile_mask_classify
// CHECK: %[[ANY:.*]] = arith.cmpi ne, %[[KIND]], %c0
// CHECK-NEXT: scf.if %[[ANY]] {
// CHECK: attn.tile_mask_region
// CHECK: attn.tile_matmul {{.*}} {accumulate, transpose_lhs}
func.func @prefix_lm(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c40 = arith.constant 40 : index
    %prefix = arith.cmpi slt, %j, %c40 : index
    %past = arith.cmpi sle, %j, %i : index
    %keep = arith.ori %prefix, %past : i1
    attn.yield %keep : i1
  }
  return %o : tensor<?x?x?x32xf32>
}

// -----

// With block-map, both backward kernels take the forward's block map (before the grid) and
// read the entry of their block: [0, h, query tile, key block] for a region that reads h (not
// b). The dK/dV kernel's query blocks start on the query tile grid (the window's first row
// rounded down to a multiple of 32), so each of its blocks is one of the forward's.
// The dQ kernel's key blocks start on the key-block grid too: the window's first key
// (start - 100) rounded down to a multiple of 64.
// MAP-LABEL: func.func @head_window_bwd_dq
// MAP-SAME: %[[MAP:[^:]*]]: memref<?x?x?x?xi8>, %{{[^:]*}}: index, %[[HEAD:[^:]*]]: index, %[[START:[^:]*]]: index)
// MAP: %[[BLOCKS:.*]] = arith.divsi %{{.*}}, %c64
// MAP-NEXT: %[[FIRST:.*]] = arith.muli %[[BLOCKS]], %c64
// MAP-NEXT: scf.for %[[J:.*]] = %[[FIRST]] to %{{.*}} step %c64
// MAP-DAG: %[[QT:.*]] = arith.divsi %[[START]], %c32
// MAP-DAG: %[[KB:.*]] = arith.divsi %[[J]], %c64
// MAP: attn.tile_mask_classify {{.*}} map %[[MAP]][%c0, %[[HEAD]], %[[QT]], %[[KB]]] : memref<?x?x?x?xi8> : index {
// MAP-LABEL: func.func @head_window_bwd_dkdv
// MAP-SAME: %[[MAP:[^:]*]]: memref<?x?x?x?xi8>, %{{[^:]*}}: index, %{{[^:]*}}: index, %[[KEY:[^:]*]]: index)
// MAP: %[[TILES:.*]] = arith.divsi %{{.*}}, %c32
// MAP: %[[FIRST:.*]] = arith.muli %[[TILES]], %c32
// MAP: scf.for
// MAP: %[[ROW:.*]] = arith.addi %[[FIRST]], %{{.*}}
// MAP-DAG: %[[QT:.*]] = arith.divsi %[[ROW]], %c32
// MAP-DAG: %[[KB:.*]] = arith.divsi %[[KEY]], %c64
// MAP: attn.tile_mask_classify {{.*}} at %[[ROW]], %[[KEY]] map %[[MAP]][%c0, %{{.*}}, %[[QT]], %[[KB]]] : memref<?x?x?x?xi8> : index {
func.func @head_window(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {window = 100} : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c2 = arith.constant 2 : index
    %odd = arith.remsi %h, %c2 : index
    %d = arith.subi %i, %j : index
    %far = arith.cmpi sge, %d, %odd : index
    attn.yield %far : i1
  }
  return %o : tensor<?x?x?x32xf32>
}

// -----

// With capture-gradients, the dQ kernel takes one gradient memref per f32 capture (after the
// fault flags; none for the i32 ids) and, per block: keeps the scores the score_mod reads
// (tile_copy), takes dS' (the gradient w.r.t. the mod's result) from the normalizer without
// the mod's derivative, and lets tile_capture_gradient scatter dS' times the mod's partials
// into the captures' gradients and turn dS' into dS. The dK/dV kernel is unchanged: it
// multiplies by the mod's derivative as before.
// CAPGRAD-LABEL: func.func @captured_bias_bwd_dq
// CAPGRAD-SAME: %[[IDS:[^:]*]]: memref<?xi32>, %[[TABLE:[^:]*]]: memref<?x?xf32>, %[[FAULT:[^:]*]]: memref<?xi32>, %[[GRAD:[^:]*]]: memref<?x?xf32>, %{{[^:]*}}: index
// CAPGRAD: attn.tile_copy %[[S:[^ ]*]] into %[[RAW:[^ ]*]]
// CAPGRAD: attn.tile_score_mod %[[S]] rows
// CAPGRAD-NOT: derivative
// CAPGRAD: attn.tile_score_gradient %[[S]], %{{[^ ]*}}, %[[G:[^ ]*]] rows %{{[^ ]*}} row_term %{{[^ ]*}} : memref<32xf32> keys
// CAPGRAD: attn.tile_capture_gradient %[[RAW]], %[[G]] {{.*}} captures(%[[IDS]], %[[TABLE]] : memref<?xi32>, memref<?x?xf32>) fault %[[FAULT]] : memref<?xi32> gradients(%[[GRAD]] : memref<?x?xf32>)
// CAPGRAD: attn.tile_matmul %[[G]]
// CAPGRAD-LABEL: func.func @captured_bias_bwd_dkdv
// CAPGRAD-NOT: tile_capture_gradient
// CAPGRAD: attn.tile_score_gradient {{.*}} derivative
func.func @captured_bias(%q: tensor<?x?x?x32xf32>, %ids: tensor<?xi32>, %table: tensor<?x?xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %q, %q captures(%ids, %table : tensor<?xi32>, tensor<?x?xf32>) normalizer(#attn.softmax) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %d: tensor<?xi32>, %t: tensor<?x?xf32>):
    %rel = arith.subi %i, %j : index
    %x = tensor.extract %t[%h, %rel] : tensor<?x?xf32>
    %r = arith.addf %s, %x : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x32xf32>
}
