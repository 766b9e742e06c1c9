// RUN: attn-opt %s --split-input-file --attn-lower-reparam-linear-gpu --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope

// The device kernels around cuBLAS's products, in the order a host runs them: the power step
// (W·u on a warp per row, normalize, Wᵀ·v on a thread per column, then u' and σ with u ← u'
// only in training) and the backward's σ term. No kernel multiplies W by γ/σ: the forward
// product takes scales[1] as its alpha.
// CHECK: module attributes {gpu.container_module}
// CHECK-LABEL: gpu.module @qkv_kernels
// CHECK: gpu.func @qkv_matvec(%[[W:[^:]*]]: memref<?x?xf32, strided<[?, 1], offset: ?>>, %[[U:[^:]*]]: memref<?xf32>, %[[T:[^:]*]]: memref<?xf32>) kernel attributes {attn.block = 32 : i64, attn.grid = "rows"
// CHECK: %[[ROW:.*]] = gpu.block_id x
// CHECK: scf.for
// CHECK-DAG: memref.load %[[W]][%[[ROW]], %{{.*}}]
// CHECK-DAG: memref.load %[[U]]
// CHECK-COUNT-5: gpu.shuffle xor
// CHECK: memref.store %{{.*}}, %[[T]][%[[ROW]]]
// CHECK: gpu.func @qkv_normalize
// CHECK: llvm.inline_asm "sqrt.rn.f32 $0, $1;"
// CHECK: arith.maximumf
// CHECK: arith.divf
// CHECK: gpu.func @qkv_matvec_t(%[[TW:[^:]*]]: memref{{.*}}, %[[TV:[^:]*]]: memref<?xf32>, %[[S:[^:]*]]: memref<?xf32>) kernel attributes {attn.block = 128 : i64, attn.grid = "cols/128"
// CHECK: gpu.func @qkv_power_finish(%[[PS:[^:]*]]: memref<?xf32>, %[[PG:[^:]*]]: memref<?xf32>, %[[PU:[^:]*]]: memref<?xf32>, %[[PUN:[^:]*]]: memref<?xf32>, %[[SCALES:[^:]*]]: memref<?xf32>)
// CHECK: gpu.shuffle xor
// CHECK: %[[ROOT:.*]] = llvm.inline_asm "sqrt.rn.f32 $0, $1;", "=f,f" %[[SQ:[^ ]*]]
// CHECK: %[[NORM:.*]] = arith.maximumf %[[ROOT]]
// CHECK: scf.for
// CHECK: %[[STEP:.*]] = arith.divf %{{.*}}, %[[NORM]]
// CHECK: memref.store %[[STEP]], %[[PUN]]
// CHECK: memref.store %[[STEP]], %[[PU]]
// CHECK: %[[SIGMA:.*]] = arith.divf %[[SQ]], %[[NORM]]
// CHECK: memref.store %[[SIGMA]], %[[SCALES]][%c0]
// CHECK: %[[GAMMA:.*]] = memref.load %[[PG]][%c0]
// CHECK: %[[C:.*]] = arith.divf %[[GAMMA]], %[[SIGMA]]
// CHECK: memref.store %[[C]], %[[SCALES]][%c1]
// CHECK: gpu.func @qkv_row_inner
// CHECK: gpu.func @qkv_sigma_factors
// CHECK: gpu.func @qkv_sigma_term(%[[G:[^:]*]]: memref<?x?xf32, strided<[?, 1], offset: ?>>, %[[SV:[^:]*]]: memref<?xf32>, %[[SU:[^:]*]]: memref<?xf32>, %[[SS:[^:]*]]: memref<?xf32>, %[[SF:[^:]*]]: memref<?xf32>)
// CHECK-DAG: memref.load %[[SS]][%c1]
// CHECK-DAG: memref.load %[[G]]
// CHECK-DAG: memref.load %[[SF]][%c0]
// CHECK-DAG: memref.load %[[SV]]
// CHECK-DAG: memref.load %[[SU]]
// CHECK: arith.subf
// CHECK: memref.store %{{.*}}, %[[G]]
// CHECK: gpu.func @qkv_bias_grad
// CHECK-NOT: func.func @qkv(
func.func @qkv(%x: tensor<?x?xf32>, %w: tensor<?x?xf32>, %b: tensor<?xf32>, %gamma: tensor<1xf32>,
               %u: tensor<?xf32>) -> (tensor<?x?xf32>, tensor<?xf32>) {
  %y, %u_next = attn.reparam_linear %x, %w bias(%b : tensor<?xf32>) gamma(%gamma : tensor<1xf32>)
      u(%u : tensor<?xf32>) {training}
      : tensor<?x?xf32>, tensor<?x?xf32> -> tensor<?x?xf32>, tensor<?xf32>
  return %y, %u_next : tensor<?x?xf32>, tensor<?xf32>
}

// -----

// Eval: the power step is taken, u is not written; no bias, no bias_grad kernel.
// CHECK-LABEL: gpu.module @eval_kernels
// CHECK: gpu.func @eval_power_finish(%{{[^:]*}}: memref<?xf32>, %{{[^:]*}}: memref<?xf32>, %[[EU:[^:]*]]: memref<?xf32>, %[[EUN:[^:]*]]: memref<?xf32>
// CHECK: memref.store %{{.*}}, %[[EUN]]
// CHECK-NOT: memref.store %{{.*}}, %[[EU]]
// CHECK: gpu.return
// CHECK-NOT: gpu.func @eval_bias_grad
func.func @eval(%x: tensor<?x?xf32>, %w: tensor<?x?xf32>, %gamma: tensor<f32>,
                %u: tensor<?xf32>) -> tensor<?x?xf32> {
  %y, %u_next = attn.reparam_linear %x, %w gamma(%gamma : tensor<f32>) u(%u : tensor<?xf32>)
      : tensor<?x?xf32>, tensor<?x?xf32> -> tensor<?x?xf32>, tensor<?xf32>
  return %y : tensor<?x?xf32>
}

// -----

func.func @double(%x: tensor<4x8xf64>, %w: tensor<6x8xf64>, %gamma: tensor<f64>,
                  %u: tensor<8xf64>) -> tensor<4x6xf64> {
  // expected-error @+1 {{lowers to GPU kernels for f32 operands, got 'f64'}}
  %y, %u_next = attn.reparam_linear %x, %w gamma(%gamma : tensor<f64>) u(%u : tensor<8xf64>)
      : tensor<4x8xf64>, tensor<6x8xf64> -> tensor<4x6xf64>, tensor<8xf64>
  return %y : tensor<4x6xf64>
}
