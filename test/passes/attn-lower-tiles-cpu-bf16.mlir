// RUN: attn-opt %s --split-input-file --attn-lower-tiles-cpu="bf16-products=amx" --canonicalize --cse | FileCheck %s --check-prefix=AMX --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-lower-tiles-cpu="bf16-products=avx512" --canonicalize --cse | FileCheck %s --check-prefix=AVX512 --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-lower-tiles-cpu="bf16-products=avx512 vector-width=8 vector-registers=16" --canonicalize --cse | FileCheck %s --check-prefix=AVX2 --enable-var-scope
// RUN: not attn-opt %s --split-input-file --attn-lower-tiles-cpu="bf16-products=fp8" 2>&1 | FileCheck %s --check-prefix=BAD

// bf16 products (bfloat16 inputs). A tile pre-scaled on load and only read by products is
// loaded unscaled (rounding q * scale to bf16 would lose the input's bits): the product takes
// the factor as alpha, so it goes through a scratch block, acc = old * row_scale + alpha * P.
//
// With AMX, q (filled by one load for this product alone) is packed to bf16 straight from its
// source rows where its load was, zero past the valid rows: no f32 copy of q. The other
// operand is packed per call (row pairs interleaved), zero past the valid depth. Then per
// block of 2 x 2 accumulator tiles, the whole static depth as unrolled tile products (64 = 2
// steps of 32, 8 products in all).
// AMX-LABEL: func.func @scaled_query_product
// AMX-DAG: %[[ALPHA:.*]] = arith.constant dense<1.250000e-01> : vector<16xf32>
// AMX-NOT: memref<64x64xf32>
// AMX-NOT: arith.mulf {{.*}} : vector<64xf32>
// AMX: %[[COUNT:.*]] = arith.maxsi
// AMX: scf.for %{{.*}} = %c0 to %[[COUNT]] step %c1 {
// AMX: vector.load %{{.*}} : memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, vector<16xf32>
// AMX: arith.truncf {{.*}} : vector<16xf32> to vector<16xbf16>
// AMX: vector.store {{.*}} : memref<64x64xbf16>, vector<16xbf16>
// AMX: scf.for %{{.*}} = %[[COUNT]] to %c64 step %c1 {
// AMX: scf.for %{{.*}} = %c0 to %c32 step %c1 {
// AMX: vector.interleave {{.*}} : vector<16xbf16> -> vector<32xbf16>
// AMX: vector.store {{.*}} : memref<32x256xbf16>, vector<32xbf16>
// AMX: %[[ZERO:.*]] = amx.tile_zero : !amx.tile<16x16xf32>
// AMX: %[[A0:.*]] = amx.tile_load %{{.*}} : memref<64x64xbf16> into !amx.tile<16x32xbf16>
// AMX: %[[B0:.*]] = amx.tile_load %{{.*}} : memref<32x256xbf16> into !amx.tile<16x32xbf16>
// AMX: amx.tile_mulf %[[A0]], %[[B0]], %[[ZERO]]
// AMX-COUNT-7: amx.tile_mulf
// AMX: amx.tile_store
// AMX: vector.fma %[[ALPHA]]
//
// AVX-512 pair dot products: the reduction runs over pairs (a depth of 64 is 32 pairs), one
// broadcast lhs pair per row, one vdpbf16ps per accumulator.
// AVX512-LABEL: func.func @scaled_query_product
// AVX512: scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args
// AVX512: vector.bitcast %{{.*}} : vector<2xbf16> to vector<1xi32>
// AVX512: x86vector.avx512.dot %{{.*}} : vector<32xbf16> -> vector<16xf32>
//
// Without 16 lanes there are no bf16 products: the load keeps its factor, FMAs.
// AVX2-LABEL: func.func @scaled_query_product
// AVX2: arith.mulf {{.*}} : vector<64xf32>
// AVX2-NOT: x86vector
// AVX2: vector.fma
//
// BAD: bf16-products must be none, avx512 or amx, got 'fp8'
func.func @scaled_query_product(%q: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %kt: memref<64x128xf32>, %s: memref<64x128xf32>, %corr: memref<64xf32>, %b: index, %h: index, %start: index, %rows: index, %cols: index) {
  %queries = memref.alloca() : memref<64x64xf32>
  attn.tile_load %q[%b, %h, %start] rows %rows into %queries {multiplier = 1.250000e-01 : f32} : memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, memref<64x64xf32>
  %c64 = arith.constant 64 : index
  attn.tile_matmul %queries, %kt into %s extents(%rows, %c64, %cols) row_scale %corr : memref<64xf32> {accumulate} : memref<64x64xf32>, memref<64x128xf32>, memref<64x128xf32>
  return
}

// -----

// The transposed lhs of dV += P^T dO: packed by 16 x 16 squares transposed in registers,
// rows past the depth zero; with the correction but no alpha, the accumulator is rescaled in
// place, loaded into the tiles and stored back by them.
// AMX-LABEL: func.func @transposed_lhs
// AMX: vector.shuffle
// AMX: arith.truncf {{.*}} : vector<16xf32> to vector<16xbf16>
// AMX: scf.for %[[I:.*]] = %c0 to %{{.*}} step %c1 {
// AMX: arith.mulf {{.*}} : vector<16xf32>
// AMX: %[[OLD:.*]] = amx.tile_load %{{.*}} : memref<32x64xf32> into !amx.tile<16x16xf32>
// AMX: amx.tile_mulf %{{.*}}, %{{.*}}, %[[OLD]]
// AMX: amx.tile_store
// AMX-NOT: vector.fma
func.func @transposed_lhs(%p: memref<64x32xf32>, %do: memref<64x64xf32>, %dv: memref<32x64xf32>, %corr: memref<32xf32>, %rows: index, %depth: index, %cols: index) {
  attn.tile_matmul %p, %do into %dv extents(%rows, %depth, %cols) row_scale %corr : memref<32xf32> {accumulate, transpose_lhs} : memref<64x32xf32>, memref<64x64xf32>, memref<32x64xf32>
  return
}

// -----

// The forward's key loop: K (loaded transposed) and V, each filled by one load for one
// product, are packed from their source rows. K's bf16 rows as 32-bit pairs are transposed
// in 16 x 16 squares (shuffles of i32 vectors); keys past the valid count are zero and their
// rows are not read (a block with no valid key is zero-filled). V's rows go in pairs: whole
// pairs below the count, an odd last row paired with zeros, zero pairs after; no f32 tiles.
// AMX-LABEL: func.func @key_value_block
// AMX-NOT: memref<128x64xf32>
// AMX: scf.for %[[BLOCK:.*]] =
// AMX: %[[KCOUNT:.*]] = arith.maxsi
// AMX: scf.for %[[R0:.*]] = %c0 to %c128 step %c16 {
// AMX: %[[ANY:.*]] = arith.cmpi slt, %[[R0]], %[[KCOUNT]]
// AMX: scf.if %[[ANY]] {
// AMX: arith.minsi
// AMX: vector.load {{.*}} vector<32xf32>
// AMX: arith.truncf {{.*}} : vector<32xf32> to vector<32xbf16>
// AMX: vector.bitcast {{.*}} : vector<32xbf16> to vector<16xi32>
// AMX: vector.shuffle {{.*}} : vector<16xi32>, vector<16xi32>
// AMX: vector.bitcast {{.*}} : vector<16xi32> to vector<32xbf16>
// AMX: } else {
// AMX: %[[PAIRS:.*]] = arith.divui %[[VCOUNT:.*]], %c2
// AMX: scf.for %{{.*}} = %c0 to %[[PAIRS]] step %c1 {
// AMX: vector.interleave
// AMX: %[[ODD:.*]] = arith.cmpi ne
// AMX: scf.if %[[ODD]] {
// AMX: vector.interleave
// AMX: amx.tile_mulf
func.func @key_value_block(%k: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %v: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %q: memref<64x64xf32>, %acc: memref<64x64xf32>, %b: index, %h: index, %keys: index, %rows: index) {
  %c0 = arith.constant 0 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %keysT = memref.alloca() : memref<64x128xf32>
  %values = memref.alloca() : memref<128x64xf32>
  %scores = memref.alloca() : memref<64x128xf32>
  scf.for %start = %c0 to %keys step %c128 {
    %left = arith.subi %keys, %start : index
    %count = arith.minsi %left, %c128 : index
    attn.tile_load %k[%b, %h, %start] rows %count into %keysT {transpose} : memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, memref<64x128xf32>
    attn.tile_load %v[%b, %h, %start] rows %count into %values : memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, memref<128x64xf32>
    attn.tile_matmul %q, %keysT into %scores extents(%rows, %c64, %count) : memref<64x64xf32>, memref<64x128xf32>, memref<64x128xf32>
    attn.tile_matmul %scores, %values into %acc extents(%rows, %count, %c64) {accumulate} : memref<64x128xf32>, memref<128x64xf32>, memref<64x64xf32>
  }
  return
}

// -----

// Shapes AMX does not take (a depth of 40) stay on f32 FMAs.
// AMX-LABEL: func.func @odd_depth
// AMX-NOT: amx.
// AMX: vector.fma
func.func @odd_depth(%a: memref<32x40xf32>, %b: memref<40x64xf32>, %c: memref<32x64xf32>, %rows: index, %depth: index, %cols: index) {
  attn.tile_matmul %a, %b into %c extents(%rows, %depth, %cols) : memref<32x40xf32>, memref<40x64xf32>, memref<32x64xf32>
  return
}
