// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward="query-tile=64 key-tile=32 key-value-query-tile=16 key-value-key-tile=64" --attn-tile="query-tile=64 key-tile=32" | FileCheck %s --check-prefix=TILE --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-derive-backward="query-tile=64 key-tile=32 key-value-query-tile=16 key-value-key-tile=64" --attn-tile="query-tile=64 key-tile=32" --attn-lower-tiles-gpu --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope

// The GPU runs the shared tiler: attn-tile and attn-derive-backward emit the same tile kernels
// as for the CPU (only the tile sizes differ), and attn-lower-tiles-gpu maps their tile ops.
// TILE-LABEL: func.func @softmax_bwd_dq
// TILE: attn.tile_matmul
// TILE: attn.tile_probabilities
// TILE: attn.tile_score_gradient
// TILE-LABEL: func.func @softmax_bwd_dkdv
// TILE: attn.tile_matmul {{.*}} {accumulate, transpose_lhs}
// TILE-LABEL: func.func @softmax_fwd
// TILE: attn.tile_normalize
// TILE-NOT: gpu.func

// Forward: Q (loaded once) is a shared operand read into fragments once, before the loop; K
// and V are loaded inside the loop, so they stream through two buffers: the prologue fills
// block 0, each iteration prefetches block n + 1 and waits for block n. S = Q K^T is
// mma.sync from Q's fragments and K's rows (K^T is a transposed view of the same rows); the
// row-wise normalizer reduces over the quad; O = O * correction + P V takes P straight from
// the accumulator registers and V through transposed ldmatrix.
// CHECK-LABEL: gpu.module @softmax_kernels
// CHECK: gpu.func @softmax_fwd({{.*}}) kernel attributes {attn.block_rows = 64 : i64, attn.dynamic_shared_memory = 24576 : i64, attn.grid = "query_blocks,query_heads,batch", attn.threads = 128 : i64
// CHECK: %[[QS:.*]] = memref.view {{.*}} to memref<64x64xbf16, #gpu.address_space<workgroup>>
// CHECK: %[[KS:.*]] = memref.view {{.*}} to memref<2x32x64xbf16, #gpu.address_space<workgroup>>
// CHECK: %[[VS:.*]] = memref.view {{.*}} to memref<2x32x64xbf16, #gpu.address_space<workgroup>>
// CHECK: nvgpu.device_async_copy %arg0{{.*}}, %[[QS]]
// CHECK: nvgpu.device_async_copy %arg1{{.*}}, %[[KS]]
// CHECK: nvgpu.device_async_copy %arg2{{.*}}, %[[VS]]
// CHECK: %[[PRO:.*]] = nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_wait %[[PRO]] {numGroups = 1 : i32}
// CHECK-NEXT: gpu.barrier
// CHECK: nvgpu.ldmatrix %[[QS]]
// CHECK: scf.for
// CHECK: nvgpu.device_async_copy %arg1{{.*}}, %[[KS]]
// CHECK: %[[NEXT:.*]] = nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_wait %[[NEXT]] {numGroups = 1 : i32}
// CHECK-NEXT: gpu.barrier
// CHECK-NOT: nvgpu.ldmatrix %[[QS]]
// CHECK: nvgpu.ldmatrix %[[KS]]{{.*}}transpose = false
// CHECK: nvvm.mma.sync
// CHECK: scf.if
// CHECK: gpu.shuffle  xor
// CHECK: math.exp2
// CHECK: gpu.shuffle  xor
// CHECK: nvgpu.ldmatrix %[[VS]]{{.*}}transpose = true
// CHECK: nvvm.mma.sync
// CHECK: gpu.barrier
// CHECK: scf.yield
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 0 : i32}
// CHECK: math.log2
// CHECK: memref.store %{{.*}}, %arg4
// CHECK: vector.store %{{.*}}, %arg3
// CHECK: gpu.return

// dQ: K and K^T are one buffer (same rows), V^T a view of V's rows.
// CHECK: gpu.func @softmax_bwd_dq({{.*}}) kernel attributes {attn.block_rows = 64 : i64, attn.dynamic_shared_memory = 32768 : i64
// CHECK: memref.view {{.*}} to memref<64x64xbf16
// CHECK: memref.view {{.*}} to memref<64x64xbf16
// CHECK: memref.view {{.*}} to memref<2x32x64xbf16
// CHECK: memref.view {{.*}} to memref<2x32x64xbf16
// CHECK-NOT: memref.view
// CHECK: scf.for

// dK/dV: the score tiles are the transposed lhs of dV += P^T dO and dK += dS^T Q, so they are
// held transposed: S^T = K Q^T with K's rows on the warps (K's fragments read once, before the
// loop), the per-query LSE and delta read per fragment column inside the loop, and P^T, dS^T
// go from the registers into the dV and dK products. Grid over key blocks and kv heads.
// CHECK: gpu.func @softmax_bwd_dkdv({{.*}}) kernel attributes {attn.block_rows = 64 : i64, {{.*}}attn.grid = "key_blocks,kv_heads,batch"
// CHECK: %[[KB:.*]] = memref.view {{.*}} to memref<64x64xbf16
// CHECK: %[[VB:.*]] = memref.view {{.*}} to memref<64x64xbf16
// CHECK: %[[QB:.*]] = memref.view {{.*}} to memref<2x16x64xbf16
// CHECK: nvgpu.ldmatrix %[[KB]]
// CHECK: nvgpu.ldmatrix %[[VB]]
// CHECK: scf.for
// CHECK: nvgpu.ldmatrix %[[QB]]{{.*}}transpose = false
// CHECK: nvvm.mma.sync
// CHECK: memref.load %arg4
// CHECK: memref.load %arg5
// CHECK: math.exp2
// CHECK: nvgpu.ldmatrix {{.*}}transpose = true
// CHECK: nvvm.mma.sync
// CHECK: scf.yield
// CHECK: vector.store %{{.*}}, %arg6
// CHECK: vector.store %{{.*}}, %arg7
// The row term of the softmax gradient, rowsum(dO * O), has its own small kernel.
// CHECK: gpu.func @softmax_bwd_delta
// CHECK: vector.reduction <add>
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal}
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}


// -----

// Captured tensors on the GPU: the score_mod runs per register, so a capture read is a scalar
// global load, bounds-checked like the CPU's (an index outside is replaced by 0 and sets the
// capture's fault flag); the kernel takes the captures and the flags as they are.
// CHECK-LABEL: gpu.func @captured_fwd
// CHECK-SAME: %[[TABLE:[^:]*]]: memref<?x?xf32>, %[[SLOPES:[^:]*]]: memref<?xf32, strided<[?], offset: ?>>, %[[FAULT:[^:]*]]: memref<?xi32, strided<[1], offset: ?>>
// CHECK: memref.atomic_rmw assign %c1_i32, %[[FAULT]][%c0]
// CHECK: memref.load %[[TABLE]][%{{.*}}, %{{.*}}] : memref<?x?xf32>
// CHECK: memref.atomic_rmw assign %c1_i32, %[[FAULT]][%c1]
// CHECK: memref.load %[[SLOPES]][%{{.*}}]
func.func @captured(%q: tensor<?x?x?x64xbf16>, %table: tensor<?x?xf32>, %slopes: tensor<?xf32>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention %q, %q, %q captures(%table, %slopes : tensor<?x?xf32>, tensor<?xf32>) normalizer(#attn.softmax)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %t: tensor<?x?xf32>, %m: tensor<?xf32>):
    %c1 = arith.constant 1 : index
    %width = tensor.dim %t, %c1 : tensor<?x?xf32>
    %center = arith.divsi %width, %c1 : index
    %rel = arith.subi %i, %j : index
    %at = arith.addi %rel, %center : index
    %x = tensor.extract %t[%h, %at] : tensor<?x?xf32>
    %slope = tensor.extract %m[%h] : tensor<?xf32>
    %y = arith.mulf %slope, %x : f32
    %r = arith.addf %s, %y : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

// A mask region on the GPU: each thread evaluates the region on a strided share of the block's
// positions, and the CTA votes with two barrier reductions (some allowed, all allowed), so the
// branch that skips empty blocks is uniform; partial blocks apply the region per register.
// CHECK-LABEL: gpu.func @documents_fwd
// CHECK: scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c128 iter_args({{.*}}) -> (i1, i1)
// CHECK: nvvm.barrier #nvvm.reduction<or> %{{.*}} -> i32
// CHECK: nvvm.barrier #nvvm.reduction<and> %{{.*}} -> i32
// CHECK: arith.select
// CHECK: scf.if
func.func @documents(%q: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c100 = arith.constant 100 : index
    %di = arith.divsi %i, %c100 : index
    %dj = arith.divsi %j, %c100 : index
    %same = arith.cmpi eq, %di, %dj : index
    attn.yield %same : i1
  }
  return %o : tensor<?x?x?x64xbf16>
}
