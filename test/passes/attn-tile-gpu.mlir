// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile-gpu="fast-math=false key-tile=16" --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile-gpu="key-tile=16 backward=true" --verify-diagnostics | FileCheck %s --check-prefix=FAST --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile-gpu="wgmma=true" --verify-diagnostics | FileCheck %s --check-prefix=WGMMA --enable-var-scope

// Softmax forward: Q is copied once (cp.async, zero-filled past Sq), the prologue fills the
// first K/V stage, then per K/V block: prefetch the next block, wait for this one, S = Q K^T on
// tensor cores, mask boundary blocks, row max across the quad (shuffles), the normalizer's row
// update: new max, shift 0 while the max is -inf, rescale factor exp2(old - shift),
// p = exp2(s - shift), the block's row sum across the quad (shuffles), sum = sum * factor +
// block sum; then O += P V with V read through transposed ldmatrix. Every thread holds its
// rows' full state, so the finalize needs no shuffles: it writes the base-2 LSE and O with row
// predication.
// CHECK: module attributes {gpu.container_module}
// CHECK-LABEL: gpu.module @softmax_kernels
// CHECK: gpu.func @softmax_fwd(%[[Q:.*]]: memref<?x?x?x?xbf16, strided<[?, ?, ?, 1], offset: ?>>, %[[K:.*]]: memref<?x?x?x?xbf16{{.*}}>, %[[V:.*]]: memref<?x?x?x?xbf16{{.*}}>, %[[O:.*]]: memref<?x?x?x?xbf16{{.*}}>, %[[LSE:.*]]: memref<?x?x?xf32, strided<[?, ?, ?], offset: ?>>) kernel
// CHECK-SAME: attn.block_rows = 64 : i64
// CHECK-SAME: attn.dynamic_shared_memory = 16384 : i64
// CHECK-SAME: attn.grid = "query_blocks,query_heads,batch"
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK: %[[SMEM:.*]] = gpu.dynamic_shared_memory
// CHECK: %[[QS:.*]] = memref.view %[[SMEM]]{{.*}} to memref<64x64xbf16, #gpu.address_space<workgroup>>
// CHECK: %[[KS:.*]] = memref.view %[[SMEM]]{{.*}} to memref<2x16x64xbf16, #gpu.address_space<workgroup>>
// CHECK: %[[VS:.*]] = memref.view %[[SMEM]]{{.*}} to memref<2x16x64xbf16, #gpu.address_space<workgroup>>
// CHECK: nvgpu.device_async_copy %[[Q]]{{.*}}, %[[QS]]{{.*}}, 8, %{{.*}} {bypassL1}
// CHECK: nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_copy %[[K]]{{.*}}, %[[KS]]
// CHECK: nvgpu.device_async_copy %[[V]]{{.*}}, %[[VS]]
// CHECK: %[[PRO:.*]] = nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_wait %[[PRO]] {numGroups = 1 : i32}
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix %[[QS]]{{.*}} {numTiles = 4 : i32, transpose = false}
// CHECK: scf.for {{.*}} iter_args
// CHECK: nvgpu.device_async_copy %[[K]]
// CHECK: %[[NEXT:.*]] = nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_wait %[[NEXT]] {numGroups = 1 : i32}
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix %[[KS]]{{.*}} {numTiles = 4 : i32, transpose = false}
// CHECK: nvvm.mma.sync {{.*}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: scf.if
// CHECK: arith.select
// CHECK: arith.maximumf
// CHECK: gpu.shuffle  xor %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK: %[[BMAX:.*]], %{{.*}} = gpu.shuffle  xor
// CHECK: %[[BLOCKMAX:.*]] = arith.maximumf %{{.*}}, %[[BMAX]]
// CHECK: %[[MAX:.*]] = arith.maximumf %{{.*}}, %[[BLOCKMAX]]
// CHECK: %[[NONE:.*]] = arith.cmpf oeq, %[[MAX]]
// CHECK: %[[SHIFT:.*]] = arith.select %[[NONE]], %{{.*}}, %[[MAX]]
// CHECK: %[[OLD:.*]] = arith.subf %{{.*}}, %[[SHIFT]]
// CHECK: %[[CORR:.*]] = math.exp2 %[[OLD]]
// CHECK: %[[S0:.*]] = arith.subf %{{.*}}, %[[SHIFT]]
// CHECK: math.exp2 %[[S0]]
// CHECK: gpu.shuffle  xor
// CHECK: %[[BSUM:.*]], %{{.*}} = gpu.shuffle  xor
// CHECK: %[[BLOCKSUM:.*]] = arith.addf %{{.*}}, %[[BSUM]]
// CHECK: %[[RESCALED:.*]] = arith.mulf %{{.*}}, %[[CORR]]
// CHECK: arith.addf %[[RESCALED]], %[[BLOCKSUM]]
// CHECK: nvgpu.ldmatrix %[[VS]]{{.*}} {numTiles = 4 : i32, transpose = true}
// CHECK: nvvm.mma.sync
// CHECK: gpu.barrier
// CHECK: scf.yield
// CHECK-NOT: gpu.shuffle
// CHECK: math.log2
// CHECK: memref.store %{{.*}}, %[[LSE]]
// CHECK: vector.store %{{.*}}, %[[O]]{{.*}} : memref<?x?x?x?xbf16, strided<[?, ?, ?, 1], offset: ?>>, vector<2xbf16>
// CHECK: gpu.return
// FAST-LABEL: gpu.func @softmax_fwd
// FAST: llvm.inline_asm "ex2.approx.ftz.f32 $0, $1;", "=f,f"
// FAST: llvm.inline_asm "lg2.approx.ftz.f32 $0, $1;", "=f,f"
// Backward, dQ: the rows' LSE and delta are read once, P = exp2(s - lse) is recomputed per
// K/V block, dQ is stored (scaled) after the loop. dK/dV: one CTA per key block, reading the
// LSE and delta of each query block's columns inside the loop. delta = rowsum(dO * O) has its
// own kernel (row-wise normalizers only).
// FAST-LABEL: gpu.func @softmax_bwd_dq(
// FAST-SAME: %[[DQ:arg6]]: memref<?x?x?x?xbf16
// FAST-SAME: attn.grid = "query_blocks,query_heads,batch"
// FAST: memref.load %arg4
// FAST: memref.load %arg5
// FAST: scf.for
// FAST: nvvm.mma.sync
// FAST: llvm.inline_asm "ex2.approx.ftz.f32 $0, $1;"
// FAST: nvvm.mma.sync
// FAST: scf.yield
// FAST: vector.store %{{.*}}, %[[DQ]]
// FAST-LABEL: gpu.func @softmax_bwd_dkdv(
// FAST-SAME: attn.grid = "key_blocks,kv_heads,batch"
// FAST: scf.for
// FAST: memref.load %arg4
// FAST: memref.load %arg5
// FAST: nvvm.mma.sync
// FAST: scf.yield
// FAST: vector.store %{{.*}}, %arg6
// FAST: vector.store %{{.*}}, %arg7
// FAST-LABEL: gpu.func @softmax_bwd_delta(
// FAST: vector.reduction <add>
// FAST: memref.store %{{.*}}, %arg2
// wgmma: Q and K tiles in [D/64][rows][64] atoms at a 1024-byte-aligned base; per K/V block a
// proxy fence, then one warpgroup MMA chain (scale-d zero on the first k-step) gives S.
// WGMMA-LABEL: gpu.func @softmax_fwd
// WGMMA: memref.extract_aligned_pointer_as_index
// WGMMA: memref.view {{.*}} to memref<1x64x64xbf16, #gpu.address_space<workgroup>>
// WGMMA: memref.view {{.*}} to memref<2x1x64x64xbf16, #gpu.address_space<workgroup>>
// WGMMA: scf.for
// WGMMA: nvgpu.device_async_wait
// WGMMA-NEXT: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// WGMMA-NEXT: gpu.barrier
// WGMMA: nvvm.wgmma.fence.aligned
// WGMMA: nvvm.wgmma.mma_async {{.*}}, <m = 64, n = 64, k = 16>, D[<f32>, <zero>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// WGMMA-COUNT-3: nvvm.wgmma.mma_async {{.*}}, <m = 64, n = 64, k = 16>, D[<f32>, <one>]
// WGMMA: nvvm.wgmma.commit.group.sync.aligned
// WGMMA: nvvm.wgmma.wait.group.sync.aligned 0
// WGMMA: nvgpu.ldmatrix {{.*}}transpose = true
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal}
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Sigmoid: elementwise, so no row statistics (no shuffles), no rescale and no LSE; p comes from
// the interface's fast form 0.5 tanh(0.5 (s + bias)) + 0.5, which fast-math turns into
// tanh.approx. Boundary blocks mask s to -inf first; sigmoid(-inf) folds to 0, so p needs no
// select after it. f16 storage selects the f16 MMA.
// CHECK-LABEL: gpu.module @sigmoid_kernels
// CHECK: gpu.func @sigmoid_fwd
// CHECK-NOT: gpu.shuffle
// CHECK: scf.for
// CHECK: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: scf.if
// CHECK: arith.select
// CHECK: math.tanh
// CHECK-NOT: arith.cmpf oeq
// CHECK: nvgpu.ldmatrix {{.*}}transpose = true
// CHECK-NOT: gpu.shuffle
// CHECK-NOT: memref.store
// CHECK: gpu.return
// FAST-LABEL: gpu.func @sigmoid_fwd
// FAST-NOT: gpu.shuffle
// FAST: llvm.inline_asm "tanh.approx.f32 $0, $1;", "=f,f"
// Sigmoid backward: no LSE, no delta (dS = p (1 - p) dP), so no row-statistic loads and no
// delta kernel.
// FAST-LABEL: gpu.func @sigmoid_bwd_dq
// FAST-NOT: memref.load
// FAST: llvm.inline_asm "tanh.approx.f32 $0, $1;"
// FAST-LABEL: gpu.func @sigmoid_bwd_dkdv
// FAST-NOT: memref.load
// FAST-NOT: gpu.func @sigmoid_bwd_delta
func.func @sigmoid(%q: tensor<?x?x?x128xf16>, %k: tensor<?x?x?x128xf16>, %v: tensor<?x?x?x128xf16>) -> tensor<?x?x?x128xf16> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid<bias = -4.0>)
      : tensor<?x?x?x128xf16>, tensor<?x?x?x128xf16>, tensor<?x?x?x128xf16> -> tensor<?x?x?x128xf16>
  return %o : tensor<?x?x?x128xf16>
}

// -----

// Head dims that are not multiples of 16 cannot be tiled for m16n8k16.
func.func @odd_head_dim(%q: tensor<?x?x?x40xf32>, %k: tensor<?x?x?x40xf32>, %v: tensor<?x?x?x40xf32>) -> tensor<?x?x?x40xf32> {
  // expected-error @+1 {{GPU kernels need head dims that are multiples of 16 in [16, 256], got 40}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax)
      : tensor<?x?x?x40xf32>, tensor<?x?x?x40xf32>, tensor<?x?x?x40xf32> -> tensor<?x?x?x40xf32>
  return %o : tensor<?x?x?x40xf32>
}

// -----

// A score_mod that masks with -inf: in the forward, p is selected to 0 where s = -inf before
// P V (this custom normalizer, s e^s, is NaN at -inf: the probe does not fold it to 0); in the
// backward, p and dS are selected to 0 there too.
// CHECK-LABEL: gpu.module @masked_custom_kernels
// CHECK: gpu.func @masked_custom_fwd
// CHECK: arith.select %{{.*}}, %[[NEGINF:.*]], %{{.*}} : f32
// CHECK: %[[MASKED:.*]] = arith.cmpf oeq, %{{.*}}, %[[NEGINF]] : f32
// CHECK: arith.select %[[MASKED]], %{{.*}}, %{{.*}} : f32
// CHECK: nvvm.mma.sync
// FAST-LABEL: gpu.func @masked_custom_bwd_dq
// FAST: arith.cmpf oeq
// FAST: arith.select
// FAST: nvvm.mma.sync
func.func @masked_custom(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) -> tensor<?x?x?x64xf16> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  normalizer_body {
  ^bb0(%s: f32):
    %e = math.exp %s : f32
    %p = arith.mulf %s, %e : f32
    attn.yield %p : f32
  }
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %c64 = arith.constant 64 : index
    %ninf = arith.constant 0xFF800000 : f32
    %early = arith.cmpi ult, %j, %c64 : index
    %r = arith.select %early, %ninf, %s : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x64xf16>
}

// -----

// kv_lengths: the GPU kernel reads the lengths as they are (i64, after the views) and loads
// its batch's length (the grid's z) once.
// CHECK-LABEL: gpu.func @ragged_fwd
// CHECK-SAME: %[[LENGTHS:arg5]]: memref<?xi64, strided<[1], offset: ?>>) kernel
// CHECK: %[[B:.*]] = gpu.block_id z
// CHECK: memref.load %[[LENGTHS]][%[[B]]] : memref<?xi64, strided<[1], offset: ?>>
func.func @ragged(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>, %lengths: tensor<?xi64>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention %q, %k, %v kv_lengths(%lengths : tensor<?xi64>) normalizer(#attn.softmax) {causal} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  return %o : tensor<?x?x?x64xbf16>
}

