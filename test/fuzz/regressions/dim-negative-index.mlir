// canonicalize, in the fuzzer's context once attn-tile-gpu has loaded the gpu dialect: MLIR 22's
// SimplifyDimOfAllocOp (a gpu.alloc canonicalization on memref.dim) indexes the memref type's
// shape with a negative constant index unchecked (ASan: SEGV, CI of 2026-12-03). Fixed by the
// attn dialect's canonicalization, which makes such a dim ub.poison first (lit test in
// test/dialects/attn/canonicalize.mlir). Kept as a seed of scripts/fuzz.sh.
func.func @f(%m: memref<?xf32>) -> index {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %i = arith.subi %c0, %c2 : index
  %d = memref.dim %m, %i : memref<?xf32>
  return %d : index
}
func.func @g(%q: tensor<1x1x?x16xf32>) -> tensor<1x1x?x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax)
      : tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32> -> tensor<1x1x?x16xf32>
  return %o : tensor<1x1x?x16xf32>
}
