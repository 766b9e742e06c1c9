// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile=block-map=true --verify-diagnostics --canonicalize --cse | FileCheck %s --check-prefix=MAP --enable-var-scope

// The forward kernel is tile IR, written once for every target: Q is loaded once with the
// scale and softmax's log2(e) folded in (1/8 * 1.4427 = 0.1803), then per K/V block
// S = Q K^T, the mask only on boundary blocks, the normalizer with its row state (giving
// each row's correction), and O = O * correction + P V; after the loop the normalizer's
// finalize gives each row's factor and LSE. Nothing in the kernel names softmax's formulas.
// CHECK-LABEL: func.func @softmax_fwd
// CHECK-SAME: (%[[Q:.*]]: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[K:.*]]: memref{{.*}}, %[[V:.*]]: memref{{.*}}, %[[O:.*]]: memref{{.*}}, %[[LSE:.*]]: memref<?x?x?xf32, strided<[?, ?, ?], offset: ?>>, %[[B:.*]]: index, %[[H:.*]]: index, %[[Q0:.*]]: index)
// CHECK-SAME: attributes {llvm.emit_c_interface}
// CHECK: attn.tile_load %[[Q]][%[[B]], %[[H]], %[[Q0]]] rows %{{.*}} into %[[QT:.*]] {multiplier = 0.180336878 : f32} : {{.*}}, memref<32x64xf32>
// CHECK: attn.tile_fill %[[ACC:.*]] with 0.000000e+00
// CHECK: attn.tile_row_init normalizer(#attn.softmax) state %[[MAX:.*]], %[[SUM:.*]] : memref<32xf32>, memref<32xf32>
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %{{.*}} step %c64
// CHECK: attn.tile_load %[[K]]{{.*}} into %[[KT:.*]] {transpose} : {{.*}}, memref<64x64xf32>
// CHECK: attn.tile_load %[[V]]{{.*}} into %[[VT:.*]] : {{.*}}, memref<64x64xf32>
// CHECK: attn.tile_matmul %[[QT]], %[[KT]] into %[[S:[^ ]*]] extents(%[[ROWS:.*]], %c64, %[[COUNT:.*]]) : memref<32x64xf32>, memref<64x64xf32>, memref<32x64xf32>
// CHECK: scf.if
// CHECK-NEXT: attn.tile_mask %[[S]] at %[[Q0]], %[[J]] lengths
// CHECK: attn.tile_normalize %[[S]] rows %[[ROWS]] keys %{{.*}} normalizer(#attn.softmax) state %[[MAX]], %[[SUM]] : {{.*}} correction %[[CORR:.*]] : memref<32xf32>
// CHECK: attn.tile_matmul %[[S]], %[[VT]] into %[[ACC]] extents(%[[ROWS]], %[[COUNT]], %c64) row_scale %[[CORR]] : memref<32xf32> {accumulate}
// CHECK: }
// CHECK: attn.tile_row_finalize normalizer(#attn.softmax) state %[[MAX]], %[[SUM]] : {{.*}} into %[[FACTOR:.*]], %[[ROWLSE:.*]] :
// CHECK: attn.tile_store %[[ROWLSE]] rows %{{.*}} into %[[LSE]]
// CHECK: attn.tile_store %[[ACC]] rows %{{.*}} into %[[O]][%[[B]], %[[H]], %[[Q0]]] row_scale %[[FACTOR]]
// CHECK-NOT: func.func @softmax(
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Sigmoid: elementwise, so no row state, no correction and no finalize; the run-time key
// length reaches the normalizer (its default bias is -ln Sk).
// CHECK-LABEL: func.func @sigmoid_fwd
// CHECK: %[[SK:.*]] = memref.dim %{{.*}}, %c2
// CHECK: %[[SKI:.*]] = arith.index_cast %[[SK]]
// CHECK: %[[SKF:.*]] = arith.sitofp %[[SKI]]
// CHECK-NOT: attn.tile_row_init
// CHECK: scf.for %{{.*}} step %c64
// CHECK: attn.tile_matmul
// CHECK: attn.tile_normalize %[[S:[^ ]*]] rows %{{.*}} keys %[[SKF]] normalizer(#attn.sigmoid) : memref<32x64xf32>
// CHECK: attn.tile_matmul %[[S]], %{{.*}} into %{{.*}} extents({{.*}}) {accumulate}
// CHECK-NOT: attn.tile_row_finalize
// CHECK: attn.tile_store
// CHECK-NOT: row_scale
func.func @sigmoid(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// Causal: the block loop ends at the tile's last row + 1 (blocks above the diagonal are
// never visited) and only blocks that cross the diagonal are masked. GQA: kv head = h / (Hq / Hkv).
// CHECK-LABEL: func.func @causal_gqa_fwd
// CHECK-SAME: (%[[Q:arg0]]: {{.*}}, %[[K:arg1]]: {{.*}}, %[[HEAD:arg6]]: index, %[[Q0:arg7]]: index)
// CHECK-DAG: %[[HKV:.*]] = memref.dim %[[K]], %c1
// CHECK-DAG: %[[HQ:.*]] = memref.dim %[[Q]], %c1
// CHECK: %[[GROUP:.*]] = arith.divsi %[[HQ]], %[[HKV]]
// CHECK: arith.divsi %[[HEAD]], %[[GROUP]]
// CHECK: %[[ROWS:.*]] = arith.maxsi
// CHECK: %[[END:.*]] = arith.addi %[[Q0]], %[[ROWS]]
// CHECK: %[[TILEHI:.*]] = arith.minsi %{{.*}}, %[[END]]
// CHECK: scf.for %{{.*}} = %c0 to %[[TILEHI]] step %c64
// CHECK: %[[CROSSES:.*]] = arith.cmpi sgt
// CHECK: scf.if %{{.*}} {
// CHECK-NEXT: attn.tile_mask {{.*}} {causal}
func.func @causal_gqa(%q: tensor<?x8x?x64xf32>, %k: tensor<?x2x?x64xf32>, %v: tensor<?x2x?x64xf32>) -> tensor<?x8x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.relu<scale = 0.5>) {causal} : tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x64xf32> -> tensor<?x8x?x64xf32>
  return %o : tensor<?x8x?x64xf32>
}

// -----

// Sliding window: the block loop starts at max(0, q0 - W).
// CHECK-LABEL: func.func @window_fwd
// CHECK: %[[START:.*]] = arith.subi %{{.*}}, %c16
// CHECK: %[[LO:.*]] = arith.maxsi %[[START]], %c0
// CHECK: scf.for %{{.*}} = %[[LO]] to
func.func @window(%q: tensor<1x1x?x16xf32>, %k: tensor<1x1x?x16xf32>, %v: tensor<1x1x?x16xf32>) -> tensor<1x1x?x16xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal, window = 16} : tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32> -> tensor<1x1x?x16xf32>
  return %o : tensor<1x1x?x16xf32>
}

// -----

// The bias is a captured tensor once attn-legalize ran: the forward kernel takes it as a memref
// and the score_mod adds bias[0, h, q, k] (its batch dimension is a broadcast 1).
// CHECK-LABEL: func.func @with_bias_fwd
// CHECK-SAME: %[[BIAS:[^:]*]]: memref<1x?x?x?xf32>, %[[FAULT:[^:]*]]: memref<?xi32>
// CHECK: attn.tile_score_mod {{.*}} captures(%[[BIAS]] : memref<1x?x?x?xf32>) fault %[[FAULT]]
// CHECK: ^bb0(%[[S:[^:]*]]: f32, %{{[^:]*}}: index, %[[H:[^:]*]]: index, %[[Q:[^:]*]]: index, %[[K:[^:]*]]: index, %[[T:[^:]*]]: memref<1x?x?x?xf32>):
// CHECK: %[[B:.*]] = memref.load %[[T]][%c0, %[[H]], %[[Q]], %[[K]]]
// CHECK: %[[SUM:.*]] = arith.addf %[[S]], %[[B]] : f32
// CHECK: attn.yield %[[SUM]]
func.func @with_bias(%q: tensor<?x?x?x16xf32>, %bias: tensor<1x?x?x?xf32>) -> tensor<?x?x?x16xf32> {
  %o = attn.attention %q, %q, %q bias(%bias : tensor<1x?x?x?xf32>) normalizer(#attn.softmax) : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  return %o : tensor<?x?x?x16xf32>
}

// -----

// A score_mod is a tile op holding the region; softmax's log2(e) comes after it (the mod sees
// natural units), then the mask of boundary blocks, then the normalizer (which gives p = 0
// wherever a score is -inf).
// CHECK-LABEL: func.func @masked_fwd
// CHECK: attn.tile_load %{{.*}} {multiplier = 0.176776692 : f32}
// CHECK: scf.for
// CHECK: attn.tile_matmul
// CHECK: attn.tile_score_mod %[[S:[^ ]*]] rows %{{.*}} batch %{{.*}} head %{{.*}} at %{{.*}}, %{{.*}} {multiplier = 1.4426950408889634 : f64} : memref<32x64xf32> {
// CHECK: arith.select
// CHECK: attn.yield
// CHECK: scf.if
// CHECK: attn.tile_mask %[[S]]
// CHECK: attn.tile_normalize %[[S]]
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

// A window beyond any sequence (found by the fuzzer: int64 max overflowed row + window + 1) is
// clamped to 2^30 keys, which covers every length the kernels run.
// CHECK-LABEL: func.func @huge_window_fwd
// CHECK-DAG: arith.constant 1073741824 : index
// CHECK-DAG: attn.tile_mask {{.*}}window = 1073741824
func.func @huge_window(%q: tensor<1x1x?x16xf32>) -> tensor<1x1x?x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) {window = 9223372036854775807}
      : tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32> -> tensor<1x1x?x16xf32>
  return %o : tensor<1x1x?x16xf32>
}

// -----

// A row-wise normalizer added in the dialect alone (softmax1) gets the same tile algorithm:
// its row state, its correction and its finalize, with no tiler change.
// CHECK-LABEL: func.func @softmax1_fwd
// CHECK: attn.tile_row_init normalizer(#attn.softmax1) state
// CHECK: attn.tile_normalize {{.*}} normalizer(#attn.softmax1) state {{.*}} correction
// CHECK: attn.tile_row_finalize normalizer(#attn.softmax1)
func.func @softmax1(%q: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax1) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// A head dim past the tiled kernels' limit is a diagnostic (the fuzzer found D = 2^31 running
// the CPU lowering out of memory).
func.func @huge_head_dim(%q: tensor<?x?x?x2048xf32>) -> tensor<?x?x?x2048xf32> {
  // expected-error @+1 {{head dim D = 2048 is above the tiled kernels' limit of 1024}}
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<?x?x?x2048xf32>, tensor<?x?x?x2048xf32>, tensor<?x?x?x2048xf32> -> tensor<?x?x?x2048xf32>
  return %o : tensor<?x?x?x2048xf32>
}

// -----

// kv_lengths: one more kernel argument; batch b's key length is min(Sk, max(0, lengths[b])),
// read once, and it bounds the key loop, the boundary-block test and the normalizer's key
// count (sigmoid's default bias is -ln of the batch's own length, as if unpadded).
// CHECK-LABEL: func.func @ragged_fwd
// CHECK-SAME: (%[[Q:arg0]]: {{.*}}, %[[K:arg1]]: {{.*}}, %[[LENGTHS:arg5]]: memref<?xi64>, %[[B:arg6]]: index, %{{.*}}: index, %{{.*}}: index)
// CHECK-DAG: %[[SK:.*]] = memref.dim %[[K]], %c2
// CHECK-DAG: %[[GIVEN:.*]] = memref.load %[[LENGTHS]][%[[B]]] : memref<?xi64>
// CHECK: %[[GIVENI:.*]] = arith.index_cast %[[GIVEN]] : i64 to index
// CHECK: %[[NONNEG:.*]] = arith.maxsi %[[GIVENI]], %c0
// CHECK: %[[LEN:.*]] = arith.minsi %[[SK]], %[[NONNEG]]
// CHECK: %[[LENI:.*]] = arith.index_cast %[[LEN]]
// CHECK: %[[LENF:.*]] = arith.sitofp %[[LENI]]
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %[[LEN]] step %c64
// CHECK: arith.subi %[[LEN]], %[[J]]
// CHECK: attn.tile_mask %{{.*}} at %{{.*}}, %[[J]] lengths %{{.*}}, %[[LEN]]
// CHECK: attn.tile_normalize %{{.*}} keys %[[LENF]] normalizer(#attn.sigmoid)
func.func @ragged(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>, %lengths: tensor<?xi64>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v kv_lengths(%lengths : tensor<?xi64>) normalizer(#attn.sigmoid) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// A mask region (documents of 100 tokens): each key block is classified first; a block the
// mask empties is skipped whole (no loads, products or normalizer), and only a partial block
// evaluates the region per score, after the boundary masks and before the normalizer.
// CHECK-LABEL: func.func @documents_fwd
// CHECK: scf.for %[[J:.*]] = %{{.*}} step %c64
// CHECK: %[[KIND:.*]] = attn.tile_mask_classify rows %[[ROWS:.*]] cols %{{.*}} batch %{{.*}} head %{{.*}} at %{{.*}}, %[[J]] : index {
// CHECK: arith.divsi
// CHECK: attn.yield %{{.*}} : i1
// CHECK: %[[ANY:.*]] = arith.cmpi ne, %[[KIND]], %c0
// CHECK-NEXT: scf.if %[[ANY]] {
// CHECK: attn.tile_load
// CHECK: attn.tile_matmul %{{.*}}, %{{.*}} into %[[S:[^ ]*]]
// CHECK: attn.tile_mask %[[S]]
// CHECK: %[[PARTIAL:.*]] = arith.cmpi eq, %[[KIND]], %c2
// CHECK-NEXT: scf.if %[[PARTIAL]] {
// CHECK-NEXT: attn.tile_mask_region %[[S]] rows %[[ROWS]]
// CHECK: attn.tile_normalize %[[S]]
// CHECK: attn.tile_matmul %[[S]]
// With block-map, the kernel takes the block map (i8, before the grid) and the classification
// reads its entry [0, 0, query tile, key block]: the region reads neither b nor h, so one
// entry serves every batch and head.
// MAP-LABEL: func.func @documents_fwd
// MAP-SAME: %[[MAP:[^:]*]]: memref<?x?x?x?xi8>, %{{[^:]*}}: index, %{{[^:]*}}: index, %[[START:[^:]*]]: index)
// MAP: scf.for %[[J:.*]] = %{{.*}} step %c64
// MAP-DAG: %[[QT:.*]] = arith.divsi %[[START]], %c32
// MAP-DAG: %[[KB:.*]] = arith.divsi %[[J]], %c64
// MAP: attn.tile_mask_classify {{.*}} at %[[START]], %[[J]] map %[[MAP]][%c0, %c0, %[[QT]], %[[KB]]] : memref<?x?x?x?xi8> : index {
func.func @documents(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c100 = arith.constant 100 : index
    %di = arith.divsi %i, %c100 : index
    %dj = arith.divsi %j, %c100 : index
    %same = arith.cmpi eq, %di, %dj : index
    attn.yield %same : i1
  }
  return %o : tensor<?x?x?x32xf32>
}

// -----

// Captured tensors become kernel arguments after kv_lengths, as memrefs, followed by one fault
// flag per capture; the tile ops that evaluate the regions take them, and the regions read
// them with memref.load.
// CHECK-LABEL: func.func @captures_fwd
// CHECK-SAME: %[[LENGTHS:[^:]*]]: memref<?xi64>, %[[DOCS:[^:]*]]: memref<?x?xi32>, %[[TABLE:[^:]*]]: memref<?x?xf32>, %[[FAULT:[^:]*]]: memref<?xi32>, %{{.*}}: index, %{{.*}}: index, %{{.*}}: index)
// CHECK: attn.tile_mask_classify {{.*}} captures(%[[DOCS]], %[[TABLE]] : memref<?x?xi32>, memref<?x?xf32>) fault %[[FAULT]] : memref<?xi32>
// CHECK: memref.load %{{.*}} : memref<?x?xi32>
// CHECK: attn.tile_score_mod {{.*}} captures(%[[DOCS]], %[[TABLE]] : memref<?x?xi32>, memref<?x?xf32>) fault %[[FAULT]]
// CHECK: memref.load %{{.*}} : memref<?x?xf32>
// CHECK: attn.tile_mask_region {{.*}} captures(%[[DOCS]], %[[TABLE]] : memref<?x?xi32>, memref<?x?xf32>) fault %[[FAULT]]
func.func @captures(%q: tensor<?x4x?x32xf32>, %lengths: tensor<?xi64>, %docs: tensor<?x?xi32>,
                    %table: tensor<?x?xf32>) -> tensor<?x4x?x32xf32> {
  %o = attn.attention %q, %q, %q kv_lengths(%lengths : tensor<?xi64>)
      captures(%docs, %table : tensor<?x?xi32>, tensor<?x?xf32>) normalizer(#attn.softmax)
      : tensor<?x4x?x32xf32>, tensor<?x4x?x32xf32>, tensor<?x4x?x32xf32> -> tensor<?x4x?x32xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %t: tensor<?x?xf32>):
    %rel = arith.subi %i, %j : index
    %bias = tensor.extract %t[%h, %rel] : tensor<?x?xf32>
    %r = arith.addf %s, %bias : f32
    attn.yield %r : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %t: tensor<?x?xf32>):
    %di = tensor.extract %d[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %d[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  return %o : tensor<?x4x?x32xf32>
}
