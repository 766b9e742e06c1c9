// The CPU pipeline takes every example variant the tiled kernels support down to the LLVM
// dialect: three C-interface kernels per variant, nothing of the source dialects left.
// RUN: attn-opt %attn_src/frontend/examples/softmax.mlir --attn-cpu-pipeline | FileCheck %s
// RUN: attn-opt %attn_src/frontend/examples/custom.mlir --attn-cpu-pipeline | FileCheck %s
// RUN: attn-opt %attn_src/frontend/examples/alibi.mlir --attn-cpu-pipeline | FileCheck %s
// RUN: attn-opt %attn_src/frontend/examples/relu.mlir --attn-cpu-pipeline | FileCheck %s
// Captured tensors (mask and score_mod regions reading them) lower to plain loads and gathers.
// RUN: attn-opt %attn_src/frontend/examples/captures.mlir --attn-cpu-pipeline | FileCheck %s
// AVX2 and 4-lane kernels (their transposes build n-D vectors that must be unrolled first).
// RUN: attn-opt %attn_src/frontend/examples/softmax.mlir --attn-cpu-pipeline=lanes=8 | FileCheck %s --check-prefix=NARROW
// RUN: attn-opt %attn_src/frontend/examples/sigmoid.mlir --attn-cpu-pipeline=lanes=4 | FileCheck %s --check-prefix=NARROW
// NARROW-DAG: llvm.func @_mlir_ciface_{{.*}}_fwd(
// NARROW-DAG: llvm.func @_mlir_ciface_{{.*}}_bwd_dkdv(
// NARROW-NOT: {{ (scf|memref|vector|arith|math|attn|cf)\.}}
// NARROW-NOT: unrealized_conversion_cast
// CHECK-DAG: llvm.func @_mlir_ciface_{{.*}}_fwd(
// CHECK-DAG: llvm.func @_mlir_ciface_{{.*}}_bwd_dq(
// CHECK-DAG: llvm.func @_mlir_ciface_{{.*}}_bwd_dkdv(
// The contractions are register-blocked FMAs over the host width (vector-width=16 by default).
// CHECK-DAG: llvm.intr.fmuladd({{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>)
// No per-lane libm calls for the normalizers: exp2/exp/tanh are polynomials.
// CHECK-NOT: llvm.call @exp
// CHECK-NOT: llvm.call @tanh
// CHECK-NOT: {{ (scf|memref|vector|arith|math|attn|cf)\.}}
// CHECK-NOT: unrealized_conversion_cast
