// attn-cpu-to-llvm lowers what the tiled kernels hold in one conversion: math with an LLVM
// intrinsic becomes the intrinsic, math without one a libm call (lane by lane on vectors),
// and scf/affine/vector/memref/arith/ub/func end as LLVM dialect with nothing else left.
// RUN: attn-opt %s --expand-strided-metadata --attn-cpu-to-llvm --reconcile-unrealized-casts | FileCheck %s

// CHECK-LABEL: llvm.func @erff(f32) -> f32
// CHECK-LABEL: llvm.func @row_sum
// CHECK: llvm.cond_br
// CHECK: llvm.load {{.*}} -> vector<4xf32>
// CHECK: llvm.intr.exp({{.*}}) : (vector<4xf32>) -> vector<4xf32>
// CHECK-COUNT-4: llvm.call @erff
// CHECK: "llvm.intr.vector.reduce.fadd"({{.*}}) <{fastmathFlags = #llvm.fastmath<reassoc>}>
// CHECK: llvm.store
// CHECK-LABEL: llvm.func @_mlir_ciface_row_sum
// CHECK-NOT: {{ (scf|memref|vector|arith|math|affine|ub|cf|func)\.}}
// CHECK-NOT: unrealized_conversion_cast
func.func @row_sum(%input: memref<?x4xf32, strided<[?, 1], offset: ?>>, %out: memref<f32>)
    attributes {llvm.emit_c_interface} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  %rows = memref.dim %input, %c0 : memref<?x4xf32, strided<[?, 1], offset: ?>>
  %sum = scf.for %i = %c0 to %rows step %c1 iter_args(%acc = %zero) -> f32 {
    %row = vector.load %input[%i, %c0] : memref<?x4xf32, strided<[?, 1], offset: ?>>, vector<4xf32>
    %e = math.exp %row : vector<4xf32>
    %f = math.erf %e : vector<4xf32>
    %s = vector.reduction <add>, %f, %acc : vector<4xf32> into f32
    scf.yield %s : f32
  }
  memref.store %sum, %out[] : memref<f32>
  return
}
