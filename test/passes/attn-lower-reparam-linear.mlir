// RUN: attn-opt %s --split-input-file --attn-lower-reparam-linear --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-lower-reparam-linear --verify-diagnostics | FileCheck %s --check-prefix=NOCOPY
// RUN: attn-opt %s --split-input-file --attn-lower-reparam-linear="vector-width=8" --verify-diagnostics --attn-cpu-lower | FileCheck %s --check-prefix=LLVM

// Training forward: the power step reads W twice (v = W·u, then u' = Wᵀ·v row by row), σ comes
// from the second half of the step, u' is stored into u, and only then the product runs on
// the host GEMM with γ/σ as its alpha and W as it was given: nothing allocates or scales a
// copy of W (the only local buffers are empty "no bias" descriptors).
// CHECK-LABEL: func.func @qkv_fwd
// CHECK-SAME: (%[[X:[^:]*]]: memref<?x?xf32, strided<[?, 1], offset: ?>>, %[[W:[^:]*]]: memref<?x?xf32, strided<[?, 1], offset: ?>>, %[[B:[^:]*]]: memref<?xf32>, %[[GAMMA:[^:]*]]: memref<?xf32>, %[[U:[^:]*]]: memref<?xf32>, %[[Y:[^:]*]]: memref<?x?xf32, strided<[?, 1], offset: ?>>, %[[V:[^:]*]]: memref<?xf32>, %[[UN:[^:]*]]: memref<?xf32>, %[[SCALES:[^:]*]]: memref<?xf32>)
// CHECK-SAME: attributes {llvm.emit_c_interface}
// CHECK-NOT: memref.alloc
// CHECK: %[[VSQ:.*]] = scf.for
// CHECK: vector.maskedload %[[U]]
// CHECK: vector.maskedload %[[W]]
// CHECK: vector.fma
// CHECK: vector.reduction <add>
// CHECK: memref.store %{{.*}}, %[[V]]
// CHECK: math.sqrt %[[VSQ]]
// CHECK: scf.for
// CHECK: vector.maskedload %[[UN]]
// CHECK: vector.maskedload %[[W]]
// CHECK: vector.fma
// CHECK: vector.maskedstore %[[UN]]
// CHECK: %[[SSQ:.*]] = vector.reduction <add>
// CHECK: %[[SNORM:.*]] = arith.maximumf
// CHECK: %[[SIGMA:.*]] = arith.divf %[[SSQ]], %[[SNORM]]
// CHECK: vector.maskedstore %[[U]]
// CHECK: %[[G:.*]] = memref.load %[[GAMMA]]
// CHECK: %[[C:.*]] = arith.divf %[[G]], %[[SIGMA]]
// CHECK: memref.store %[[SIGMA]], %[[SCALES]]
// CHECK: memref.store %[[C]], %[[SCALES]]
// CHECK: call @attn_host_gemm_f32(%[[X]], %[[W]], %[[B]], %[[Y]], %[[C]], %c2_i64)
// CHECK-NEXT: return

// From the kernel's start to the product: no buffer of any kind and no vector product that
// could scale W.
// NOCOPY-LABEL: func.func @qkv_fwd
// NOCOPY-NOT: memref.alloc
// NOCOPY-NOT: arith.mulf {{.*}} : vector
// NOCOPY: call @attn_host_gemm_f32

// The backward: dx = (γ/σ)·dy·W only when asked, G = dyᵀ·x into dW, ⟨G, W⟩, dγ = ⟨G, W⟩/σ,
// then dW = (γ/σ)·G − (γ⟨G, W⟩/σ²)·v·u'ᵀ in place, then db.
// CHECK-LABEL: func.func @qkv_bwd
// CHECK-SAME: (%[[DY:[^:]*]]: memref{{.*}}, %[[BX:[^:]*]]: memref{{.*}}, %[[BW:[^:]*]]: memref{{.*}}, %[[BG:[^:]*]]: memref<?xf32>, %[[BV:[^:]*]]: memref<?xf32>, %[[BU:[^:]*]]: memref<?xf32>, %[[BS:[^:]*]]: memref<?xf32>, %[[DX:[^:]*]]: memref{{.*}}, %[[DW:[^:]*]]: memref{{.*}}, %[[DB:[^:]*]]: memref<?xf32>, %[[DG:[^:]*]]: memref<?xf32>, %[[NEEDDX:[^:]*]]: i1)
// CHECK-DAG: %[[BSIGMA:.*]] = memref.load %[[BS]][%c0]
// CHECK-DAG: %[[BC:.*]] = memref.load %[[BS]][%c1]
// CHECK: scf.if %[[NEEDDX]]
// CHECK: func.call @attn_host_gemm_f32(%[[DY]], %[[BW]], %{{.*}}, %[[DX]], %[[BC]], %c0_i64)
// CHECK: call @attn_host_gemm_f32(%[[DY]], %[[BX]], %{{.*}}, %[[DW]], %{{.*}}, %c1_i64)
// CHECK: %[[INNER:.*]] = scf.for
// CHECK: vector.maskedload %[[BW]]
// CHECK: vector.maskedload %[[DW]]
// CHECK: %[[DGAMMA:.*]] = arith.divf %[[INNER]], %[[BSIGMA]]
// CHECK: memref.store %[[DGAMMA]], %[[DG]]
// CHECK: %[[SIGMA2:.*]] = arith.mulf %[[BSIGMA]], %[[BSIGMA]]
// CHECK: %[[GI:.*]] = arith.mulf %{{.*}}, %[[INNER]]
// CHECK: %[[K:.*]] = arith.divf %[[GI]], %[[SIGMA2]]
// CHECK: scf.for
// CHECK: memref.load %[[BV]]
// CHECK: arith.mulf %[[K]]
// CHECK: arith.negf
// CHECK: scf.for
// CHECK: vector.maskedload %[[DW]]
// CHECK: vector.maskedload %[[BU]]
// CHECK: vector.fma
// CHECK: vector.maskedstore %[[DW]]
// CHECK: vector.maskedstore %[[DB]]
// CHECK: vector.maskedload %[[DY]]
// CHECK: vector.maskedstore %[[DB]]
// CHECK-NOT: func.func @qkv(

// The whole module reaches the LLVM dialect; the host GEMM is called through its C interface.
// LLVM: llvm.func @_mlir_ciface_attn_host_gemm_f32
// LLVM: llvm.func @_mlir_ciface_qkv_fwd
// LLVM: llvm.func @_mlir_ciface_qkv_bwd
func.func @qkv(%x: tensor<?x?xf32>, %w: tensor<?x?xf32>, %b: tensor<?xf32>, %gamma: tensor<1xf32>,
               %u: tensor<?xf32>) -> (tensor<?x?xf32>, tensor<?xf32>) {
  %y, %u_next = attn.reparam_linear %x, %w bias(%b : tensor<?xf32>) gamma(%gamma : tensor<1xf32>)
      u(%u : tensor<?xf32>) {training}
      : tensor<?x?xf32>, tensor<?x?xf32> -> tensor<?x?xf32>, tensor<?xf32>
  return %y, %u_next : tensor<?x?xf32>, tensor<?xf32>
}

// -----

// Eval: the power step is taken (σ from it) but u is never written; f64 takes f64 vectors of
// half as many lanes and the f64 GEMM; without a bias the product gets an empty one.
// CHECK-LABEL: func.func @eval_fwd
// CHECK-SAME: (%[[X:[^:]*]]: memref<?x?xf64, strided<[?, 1], offset: ?>>, %[[W:[^:]*]]: memref<?x?xf64, strided<[?, 1], offset: ?>>, %[[GAMMA:[^:]*]]: memref<?xf64>, %[[U:[^:]*]]: memref<?xf64>, %[[Y:[^:]*]]: memref{{.*}}, %[[V:[^:]*]]: memref<?xf64>, %[[UN:[^:]*]]: memref<?xf64>, %[[SCALES:[^:]*]]: memref<?xf64>)
// CHECK: vector.maskedload %[[W]]{{.*}} into vector<8xf64>
// CHECK-NOT: vector.maskedstore %[[U]]
// CHECK: %[[EMPTY:.*]] = memref.alloca() : memref<0xf64>
// CHECK: %[[NOBIAS:.*]] = memref.cast %[[EMPTY]] : memref<0xf64> to memref<?xf64>
// CHECK: call @attn_host_gemm_f64(%[[X]], %[[W]], %[[NOBIAS]], %[[Y]], %{{.*}}, %c2_i64)
// CHECK-LABEL: func.func @eval_bwd
// CHECK-SAME: %{{[^:]*}}: memref<?xf64>, %{{[^:]*}}: i1)
func.func @eval(%x: tensor<?x?xf64>, %w: tensor<?x?xf64>, %gamma: tensor<f64>,
                %u: tensor<?xf64>) -> tensor<?x?xf64> {
  %y, %u_next = attn.reparam_linear %x, %w gamma(%gamma : tensor<f64>) u(%u : tensor<?xf64>)
      : tensor<?x?xf64>, tensor<?x?xf64> -> tensor<?x?xf64>, tensor<?xf64>
  return %y : tensor<?x?xf64>
}

// -----

func.func @computed_weight(%x: tensor<4x8xf32>, %w: tensor<6x8xf32>, %gamma: tensor<f32>,
                           %u: tensor<8xf32>) -> tensor<4x6xf32> {
  %w2 = arith.addf %w, %w : tensor<6x8xf32>
  // expected-error @+1 {{can only be lowered when its operands are the function's arguments}}
  %y, %u_next = attn.reparam_linear %x, %w2 gamma(%gamma : tensor<f32>) u(%u : tensor<8xf32>)
      : tensor<4x8xf32>, tensor<6x8xf32> -> tensor<4x6xf32>, tensor<8xf32>
  return %y : tensor<4x6xf32>
}

// -----

func.func @half(%x: tensor<4x8xbf16>, %w: tensor<6x8xbf16>, %gamma: tensor<bf16>,
                %u: tensor<8xbf16>) -> tensor<4x6xbf16> {
  // expected-error @+1 {{lowers for f32 and f64 operands, got 'bf16'}}
  %y, %u_next = attn.reparam_linear %x, %w gamma(%gamma : tensor<bf16>) u(%u : tensor<8xbf16>)
      : tensor<4x8xbf16>, tensor<6x8xbf16> -> tensor<4x6xbf16>, tensor<8xbf16>
  return %y : tensor<4x6xbf16>
}
