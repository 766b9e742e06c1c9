// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward="query-tile=64 key-tile=16 key-value-query-tile=16 key-value-key-tile=64 capture-gradients=true" --attn-tile="query-tile=64 key-tile=16" --attn-lower-tiles-gpu --canonicalize --cse | FileCheck %s --enable-var-scope

// Capture gradients in the GPU dQ kernel. tile_copy keeps the scores the score_mod read (in
// registers); tile_capture_gradient replays the mod per register with tangents, adds
// G * d mod / d read into the gradient buffer (one per f32 capture, after the fault flags) with
// an atomic add where the score contributes (G != 0, valid row and key), then forms
// dS = G * d mod / d s, which feeds dQ += dS K.
// A read that varies over the tile (table[h, i - j + 63]): one atomic add per register.
// CHECK-LABEL: gpu.func @table_bwd_dq(
// CHECK-SAME: %[[TABLE:arg7]]: memref<2x127xf32>, %[[FAULT:arg8]]: memref<?xi32{{.*}}>, %[[GRAD:arg9]]: memref<2x127xf32>)
// CHECK: scf.for
// The forward replay of s * table[h, x] (tile_score_mod).
// CHECK: %[[READ:.*]] = memref.load %[[TABLE]][%[[H:[0-9]+]], %[[X:[0-9]+]]] : memref<2x127xf32>
// CHECK: arith.mulf %[[RAW:.*]], %[[READ]] : f32
// tile_capture_gradient: the replay, the atomic add of G * s at the read, then dS = G * table.
// CHECK: %[[AGAIN:.*]] = memref.load %[[TABLE]][%[[H]], %[[X]]]
// CHECK: %[[NONZERO:.*]] = arith.cmpf one, %[[G:.*]], %{{.*}} : f32
// CHECK: %[[ADDS:.*]] = arith.andi %{{.*}}, %[[NONZERO]] : i1
// CHECK: %[[PRODUCT:.*]] = arith.mulf %[[G]], %[[RAW]] : f32
// CHECK: %[[CONTRIBUTION:.*]] = arith.select %[[ADDS]], %[[PRODUCT]]
// CHECK: scf.if %[[ADDS]] {
// CHECK-NEXT: memref.atomic_rmw addf %[[CONTRIBUTION]], %[[GRAD]][%[[H]], %[[X]]] : (f32, memref<2x127xf32>) -> f32
// CHECK: %[[DS:.*]] = arith.mulf %[[G]], %[[AGAIN]] : f32
// CHECK-COUNT-7: memref.atomic_rmw addf {{.*}}, %[[GRAD]]
// CHECK-NOT: memref.atomic_rmw addf
// CHECK: vector.from_elements %[[DS]], %{{.*}} : vector<2xf32>
// CHECK: nvvm.mma.sync
// The dK/dV kernel takes no gradient buffer.
// CHECK-LABEL: gpu.func @table_bwd_dkdv(
// CHECK-NOT: memref.atomic_rmw addf
// CHECK: gpu.return
func.func @table(%q: tensor<1x2x64x64xf32>, %k: tensor<1x2x64x64xf32>,
                 %v: tensor<1x2x64x64xf32>, %t: tensor<2x127xf32>) -> tensor<1x2x64x64xf32> {
  %o = attn.attention %q, %k, %v captures(%t : tensor<2x127xf32>) normalizer(#attn.softmax)
      : tensor<1x2x64x64xf32>, tensor<1x2x64x64xf32>, tensor<1x2x64x64xf32> -> tensor<1x2x64x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %m: tensor<2x127xf32>):
    %c63 = arith.constant 63 : index
    %d = arith.subi %i, %j : index
    %x = arith.addi %d, %c63 : index
    %bias = tensor.extract %m[%h, %x] : tensor<2x127xf32>
    %r = arith.mulf %s, %bias : f32
    attn.yield %r : f32
  }
  return %o : tensor<1x2x64x64xf32>
}

// -----

// A read uniform over the tile (slopes[h]): summed per thread, then over the warp (xor
// shuffles 16 .. 1), and added once by lane 0 where the sum is not 0; no atomic per score.
// CHECK-LABEL: gpu.func @slopes_bwd_dq(
// CHECK-SAME: %[[SLOPES:arg7]]: memref<?xf32{{.*}}>, %[[FAULT:arg8]]: memref<?xi32{{.*}}>, %[[GRAD:arg9]]: memref<?xf32{{.*}}>)
// CHECK: scf.for
// CHECK: memref.load %[[SLOPES]][%[[H:[0-9]+]]]
// CHECK-NOT: memref.atomic_rmw addf
// CHECK: gpu.shuffle xor %{{.*}}, %c16_i32, %c32_i32 : f32
// CHECK: gpu.shuffle xor {{.*}}, %c8_i32
// CHECK: gpu.shuffle xor {{.*}}, %c4_i32
// CHECK: gpu.shuffle xor {{.*}}, %c2_i32
// CHECK: %[[LAST:.*]], %{{.*}} = gpu.shuffle xor {{.*}}, %c1_i32
// CHECK-NEXT: %[[WARP:.*]] = arith.addf %{{.*}}, %[[LAST]] : f32
// CHECK-NEXT: %[[NONZERO:.*]] = arith.cmpf une, %[[WARP]], %{{.*}} : f32
// CHECK-NEXT: %[[LANE0:.*]] = arith.cmpi eq, %{{.*}}, %c0 : index
// CHECK-NEXT: %[[ADDS:.*]] = arith.andi %[[LANE0]], %[[NONZERO]] : i1
// CHECK-NEXT: scf.if %[[ADDS]] {
// CHECK-NEXT: memref.atomic_rmw addf %[[WARP]], %[[GRAD]][%[[H]]]
// CHECK-NOT: memref.atomic_rmw addf
// CHECK: nvvm.mma.sync
// CHECK: gpu.return
func.func @slopes(%q: tensor<1x2x64x64xf32>, %k: tensor<1x2x64x64xf32>,
                  %v: tensor<1x2x64x64xf32>, %m: tensor<2xf32>) -> tensor<1x2x64x64xf32> {
  %o = attn.attention %q, %k, %v captures(%m : tensor<2xf32>) normalizer(#attn.softmax)
      : tensor<1x2x64x64xf32>, tensor<1x2x64x64xf32>, tensor<1x2x64x64xf32> -> tensor<1x2x64x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %t: tensor<2xf32>):
    %slope = tensor.extract %t[%h] : tensor<2xf32>
    %d = arith.subi %i, %j : index
    %di = arith.index_cast %d : index to i64
    %df = arith.sitofp %di : i64 to f32
    %p = arith.mulf %slope, %df : f32
    %r = arith.subf %s, %p : f32
    attn.yield %r : f32
  }
  return %o : tensor<1x2x64x64xf32>
}
