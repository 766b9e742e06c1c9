// RUN: attn-opt %s --split-input-file --attn-fuse-reparam-attention --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-fuse-reparam-attention --verify-diagnostics | FileCheck %s --check-prefix=NOCOPY
// RUN: attn-opt %s --split-input-file --attn-fuse-reparam-attention="kernels=forward vector-width=8" --verify-diagnostics --attn-cpu-lower | FileCheck %s --check-prefix=LLVM
// RUN: attn-opt %s --split-input-file --attn-fuse-reparam-attention="kernels=backward vector-width=8" --verify-diagnostics --attn-cpu-lower | FileCheck %s --check-prefix=LLVM-BWD

// A σReparam QKV projection (GQA: 4 query heads, 2 key/value heads of 16) feeding a causal
// softmax attention. The forward block: the σReparam forward writes the QKV buffer through its
// [B·S, 128] view (power step, then the host GEMM), and only then the attention runs on q, k
// and v taken as strided views of that same buffer: expand [B, S, 8, 16], one subview per head
// group at feature offsets 0, 64 and 96, S and H swapped. Nothing is allocated or copied.
// CHECK-LABEL: func.func @block_qkv_fwd
// CHECK: math.sqrt
// CHECK: %[[SIGMA:.*]] = arith.divf %{{.*}}, %{{.*}} : f32
// CHECK: %[[ALPHA:.*]] = arith.divf %{{.*}}, %[[SIGMA]] : f32
// CHECK: call @attn_host_gemm_f32(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[ALPHA]], %c2_i64)
// CHECK-NEXT: return

// CHECK-LABEL: func.func @block_fwd
// CHECK-SAME: %[[QKV:[^:]*]]: memref<?x?x128xf32>, %[[OUT:[^:]*]]: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[LSE:[^:]*]]: memref<?x?x?xf32, strided<[?, ?, 1], offset: ?>>, %{{[^:]*}}: memref<?xf32>, %{{[^:]*}}: memref<?xf32>, %{{[^:]*}}: memref<?xf32>, %[[HANDLE:[^:]*]]: i64)
// CHECK-NOT: memref.alloc
// CHECK: %[[ROWS:.*]] = memref.collapse_shape %[[QKV]] {{\[\[}}0, 1], [2]]
// CHECK: %[[Y:.*]] = memref.cast %[[ROWS]]
// CHECK: call @block_qkv_fwd(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[Y]],
// CHECK: %[[HEADS:.*]] = memref.expand_shape %[[QKV]] {{\[\[}}0], [1], [2, 3]] output_shape [%{{.*}}, %{{.*}}, 8, 16]
// CHECK: %[[QS:.*]] = memref.subview %[[HEADS]][0, 0, 0, 0] [%{{.*}}, %{{.*}}, 4, 16] [1, 1, 1, 1]
// CHECK: %[[QT:.*]] = memref.transpose %[[QS]] (d0, d1, d2, d3) -> (d0, d2, d1, d3) {{.*}} to memref<?x4x?x16xf32, strided<[?, 16, 128, 1]>>
// CHECK: %[[Q:.*]] = memref.cast %[[QT]]
// CHECK: %[[KS:.*]] = memref.subview %[[HEADS]][0, 0, 4, 0] [%{{.*}}, %{{.*}}, 2, 16] [1, 1, 1, 1]
// CHECK: %[[KT:.*]] = memref.transpose %[[KS]] {{.*}} to memref<?x2x?x16xf32, strided<[?, 16, 128, 1], offset: 64>>
// CHECK: %[[K:.*]] = memref.cast %[[KT]]
// CHECK: %[[VS:.*]] = memref.subview %[[HEADS]][0, 0, 6, 0] [%{{.*}}, %{{.*}}, 2, 16] [1, 1, 1, 1]
// CHECK: %[[VT:.*]] = memref.transpose %[[VS]] {{.*}} to memref<?x2x?x16xf32, strided<[?, 16, 128, 1], offset: 96>>
// CHECK: %[[V:.*]] = memref.cast %[[VT]]
// CHECK: call @attn_host_attention_forward(%[[HANDLE]], %[[Q]], %[[K]], %[[V]], %[[OUT]], %[[LSE]])
// CHECK-NEXT: return

// The backward block: dQ, dK and dV are written into views of one gradient buffer of the QKV
// layout, and that buffer, seen as [B·S, 128], is the σReparam backward's dy.
// CHECK-LABEL: func.func @block_bwd
// CHECK-SAME: (%[[DOUT:[^:]*]]: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %{{[^:]*}}: memref<?x?xf32, strided<[?, 1], offset: ?>>, %{{[^:]*}}: memref<?x?xf32, strided<[?, 1], offset: ?>>, %{{[^:]*}}: memref<?xf32>, %[[BQKV:[^:]*]]: memref<?x?x128xf32>, %[[BOUT:[^:]*]]: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[BLSE:[^:]*]]: memref<?x?x?xf32, strided<[?, ?, 1], offset: ?>>, %{{[^:]*}}: memref<?xf32>, %{{[^:]*}}: memref<?xf32>, %{{[^:]*}}: memref<?xf32>, %[[DQKV:[^:]*]]: memref<?x?x128xf32>,
// CHECK-NOT: memref.alloc
// CHECK: memref.expand_shape %[[BQKV]]
// CHECK: %[[GRADS:.*]] = memref.expand_shape %[[DQKV]] {{\[\[}}0], [1], [2, 3]]
// CHECK: %[[DQS:.*]] = memref.subview %[[GRADS]][0, 0, 0, 0]
// CHECK: %[[DQT:.*]] = memref.transpose %[[DQS]]
// CHECK: %[[DQ:.*]] = memref.cast %[[DQT]]
// CHECK: %[[DKS:.*]] = memref.subview %[[GRADS]][0, 0, 4, 0]
// CHECK: %[[DKT:.*]] = memref.transpose %[[DKS]]
// CHECK: %[[DK:.*]] = memref.cast %[[DKT]]
// CHECK: %[[DVS:.*]] = memref.subview %[[GRADS]][0, 0, 6, 0]
// CHECK: %[[DVT:.*]] = memref.transpose %[[DVS]]
// CHECK: %[[DV:.*]] = memref.cast %[[DVT]]
// CHECK: call @attn_host_attention_backward(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[BOUT]], %[[BLSE]], %[[DOUT]], %[[DQ]], %[[DK]], %[[DV]])
// CHECK: %[[DROWS:.*]] = memref.collapse_shape %[[DQKV]] {{\[\[}}0, 1], [2]]
// CHECK: %[[DY:.*]] = memref.cast %[[DROWS]]
// CHECK: call @block_qkv_bwd(%[[DY]],
// CHECK-NEXT: return

// The attention alone, for the attention JIT.
// CHECK-LABEL: func.func @block_attention
// CHECK-SAME: (%[[AQ:.*]]: tensor<?x4x?x16xf32>, %[[AK:.*]]: tensor<?x2x?x16xf32>, %[[AV:.*]]: tensor<?x2x?x16xf32>)
// CHECK: attn.attention %[[AQ]], %[[AK]], %[[AV]] normalizer(#attn.softmax) {causal}
// CHECK-NOT: attn.reparam_linear
// CHECK-NOT: attn.split_heads

// No copy anywhere in the block's kernels: no heap buffer, no memref.copy, no linalg (the only
// stack buffers are the σReparam backward's empty "no bias" descriptors, memref<0xf32>).
// NOCOPY-NOT: {{memref.alloc\(|memref.copy|linalg\.|memref.alloca\(\) : memref<[1-9]}}

// The kernels lower to LLVM with the C interfaces the runtime calls and the host symbols it
// binds.
// LLVM-DAG: llvm.func @_mlir_ciface_block_fwd
// LLVM-DAG: llvm.func @_mlir_ciface_attn_host_attention_forward
// LLVM-DAG: llvm.func @_mlir_ciface_attn_host_gemm_f32
// LLVM-BWD-DAG: llvm.func @_mlir_ciface_block_bwd
// LLVM-BWD-DAG: llvm.func @_mlir_ciface_attn_host_attention_backward
func.func @block(%x: tensor<?x?x64xf32>, %w: tensor<128x64xf32>, %b: tensor<128xf32>, %g: tensor<1xf32>, %u: tensor<64xf32>) -> (tensor<?x4x?x16xf32>, tensor<64xf32>) {
  %y, %u2 = attn.reparam_linear %x, %w bias(%b : tensor<128xf32>) gamma(%g : tensor<1xf32>) u(%u : tensor<64xf32>) {training} : tensor<?x?x64xf32>, tensor<128x64xf32> -> tensor<?x?x128xf32>, tensor<64xf32>
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<?x?x128xf32> -> tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal} : tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32> -> tensor<?x4x?x16xf32>
  return %o, %u2 : tensor<?x4x?x16xf32>, tensor<64xf32>
}

// -----

func.func @kv_lengths(%x: tensor<2x8x32xf32>, %w: tensor<96x32xf32>, %g: tensor<1xf32>, %u: tensor<32xf32>, %n: tensor<2xi64>) -> tensor<2x2x8x16xf32> {
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<1xf32>) u(%u : tensor<32xf32>) : tensor<2x8x32xf32>, tensor<96x32xf32> -> tensor<2x8x96xf32>, tensor<32xf32>
  %q, %k, %v = attn.split_heads %y {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x8x96xf32> -> tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  // expected-error @+1 {{in a fused block takes no bias, kv_lengths or captures yet}}
  %o = attn.attention %q, %k, %v kv_lengths(%n : tensor<2xi64>) normalizer(#attn.softmax) : tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32> -> tensor<2x2x8x16xf32>
  return %o : tensor<2x2x8x16xf32>
}

// -----

func.func @projection_used_twice(%x: tensor<2x8x32xf32>, %w: tensor<96x32xf32>, %g: tensor<1xf32>, %u: tensor<32xf32>) -> (tensor<2x2x8x16xf32>, tensor<2x8x96xf32>) {
  // expected-error @+1 {{in a fused block must feed exactly one attn.split_heads}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<1xf32>) u(%u : tensor<32xf32>) : tensor<2x8x32xf32>, tensor<96x32xf32> -> tensor<2x8x96xf32>, tensor<32xf32>
  %q, %k, %v = attn.split_heads %y {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x8x96xf32> -> tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32> -> tensor<2x2x8x16xf32>
  return %o, %y : tensor<2x2x8x16xf32>, tensor<2x8x96xf32>
}

// -----

func.func @swapped_heads(%x: tensor<2x8x32xf32>, %w: tensor<96x32xf32>, %g: tensor<1xf32>, %u: tensor<32xf32>) -> tensor<2x2x8x16xf32> {
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<1xf32>) u(%u : tensor<32xf32>) : tensor<2x8x32xf32>, tensor<96x32xf32> -> tensor<2x8x96xf32>, tensor<32xf32>
  %q, %k, %v = attn.split_heads %y {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x8x96xf32> -> tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  // expected-error @+1 {{in a fused block takes q, k and v from the attn.split_heads, in that order}}
  %o = attn.attention %q, %v, %k normalizer(#attn.softmax) : tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32> -> tensor<2x2x8x16xf32>
  return %o : tensor<2x2x8x16xf32>
}

// -----

func.func @f64_block(%x: tensor<2x8x32xf64>, %w: tensor<96x32xf64>, %g: tensor<1xf64>, %u: tensor<32xf64>) -> tensor<2x2x8x16xf64> {
  // expected-error @+1 {{in a fused block lowers for f32 (the attention kernels read f32 views), got 'f64'}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<1xf64>) u(%u : tensor<32xf64>) : tensor<2x8x32xf64>, tensor<96x32xf64> -> tensor<2x8x96xf64>, tensor<32xf64>
  %q, %k, %v = attn.split_heads %y {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x8x96xf64> -> tensor<2x2x8x16xf64>, tensor<2x2x8x16xf64>, tensor<2x2x8x16xf64>
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<2x2x8x16xf64>, tensor<2x2x8x16xf64>, tensor<2x2x8x16xf64> -> tensor<2x2x8x16xf64>
  return %o : tensor<2x2x8x16xf64>
}
