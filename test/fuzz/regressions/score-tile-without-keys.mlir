// attn-lower-tiles-cpu (LowerNormalize, passes/LowerTilesCpu.cpp): a tile_normalize whose score
// tile has 0 key columns made a vector<0xf32> (ASan: SEGV in Builder::getF32Type under
// Emit::loadVector; local run of 2026-12-03). Fixed by the tile ops' verifiers: a score tile has
// at least one row and one key column (test/dialects/attn/invalid.mlir). Kept as a seed of
// scripts/fuzz.sh.
func.func @softmax_rows(%s: memref<31x0xf32>, %max: memref<31xf32>, %sum: memref<31xf32>, %corr: memref<31xf32>, %keys: f32, %rows: index) {
  attn.tile_normalize %s rows %rows keys %keys normalizer(#attn.softmax) state %max, %sum : memref<31xf32>, memref<31xf32> correction %corr : memref<31xf32> : memref<31x0xf32>
  return
}
