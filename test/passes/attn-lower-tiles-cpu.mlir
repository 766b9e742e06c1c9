// RUN: attn-opt %s --split-input-file --attn-lower-tiles-cpu --canonicalize --cse | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --split-input-file --attn-lower-tiles-cpu="vector-width=8 vector-registers=16" --canonicalize --cse | FileCheck %s --check-prefix=AVX2 --enable-var-scope

// The tile IR is written by hand here: the CPU lowering of each tile op, one by one.

// tile_matmul with the online correction: register blocks of 6 rows x 4 host vectors (24
// accumulators) on AVX-512, 6 x 2 on AVX2; the accumulator rows are rescaled once when loaded,
// then the whole reduction runs in registers (one broadcast of an lhs element per row, one
// rhs vector per column vector, FMAs); the 4 rows left over get their own block. Only the
// valid extents run: row blocks up to `rows` (rounded up to a block), the reduction up to
// `depth`, column blocks that start before `cols`.
// CHECK-LABEL: func.func @matmul
// CHECK-SAME: %[[ROWS:[a-z0-9]+]]: index, %[[DEPTH:[a-z0-9]+]]: index, %[[COLS:[a-z0-9]+]]: index)
// CHECK-DAG: %[[VROWS:.*]] = arith.minsi %[[ROWS]], %c64
// CHECK-DAG: %[[VDEPTH:.*]] = arith.minsi %[[DEPTH]], %c32
// CHECK: %[[ANYCOLS:.*]] = arith.cmpi sgt, %[[COLS]], %c0
// CHECK: scf.if %[[ANYCOLS]] {
// CHECK: scf.for %[[R0:.*]] = %c0 to %{{.*}} step %c6 {
// CHECK: %[[CORR:.*]] = memref.load %{{.*}}[%[[R0]]]
// CHECK: %[[OLD:.*]] = vector.load %{{.*}}[%[[R0]], %c0] : memref<64x64xf32>, vector<16xf32>
// CHECK: arith.mulf %[[OLD]], %{{.*}} : vector<16xf32>
// CHECK: scf.for %[[K:.*]] = %c0 to %[[VDEPTH]] step %c1 iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
// CHECK-COUNT-4: vector.load %{{.*}}[%[[K]], %{{.*}}] : memref<32x64xf32>, vector<16xf32>
// CHECK: memref.load %{{.*}}[%[[R0]], %[[K]]] : memref<64x32xf32>
// CHECK: vector.broadcast
// CHECK-COUNT-4: vector.fma
// CHECK: scf.yield
// CHECK-COUNT-24: vector.store
// CHECK: }
// The remainder rows 60..63, when valid.
// CHECK: arith.cmpi sgt, %[[VROWS]], %c60
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
// AVX2-LABEL: func.func @matmul
// AVX2: scf.for %{{.*}} = %c0 to %{{.*}} step %c6 {
// AVX2: scf.for {{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>) {
// AVX2-COUNT-2: vector.load {{.*}} vector<8xf32>
func.func @matmul(%a: memref<64x32xf32>, %b: memref<32x64xf32>, %c: memref<64x64xf32>, %corr: memref<64xf32>, %rows: index, %depth: index, %cols: index) {
  attn.tile_matmul %a, %b into %c extents(%rows, %depth, %cols) row_scale %corr : memref<64xf32> {accumulate} : memref<64x32xf32>, memref<32x64xf32>, memref<64x64xf32>
  return
}

// -----

// tile_normalize of softmax, 16 rows at a time (the vector width): per row the block max
// folded to 16 lanes, then one transposed reduction (shuffle pairs) gives the 16 rows' maxima
// in one vector; the interface's shift (0 while a row has seen only -inf) and correction
// exp2(old - shift) on vectors of 16 rows; per row p = exp2(s - shift) and its sum folded to
// 16 lanes; the sums' transposed reduction; the state and the correction stored as vectors.
// The rows past the last whole group take the same steps one row at a time, with vector
// reductions. p is 0 where s is -inf without a select: the CPU's exp2 polynomial, folded at
// -inf, gives exactly 0.
// CHECK-LABEL: func.func @softmax_rows
// CHECK: %[[PARTIALS:.*]] = memref.alloca() : memref<16x16xf32>
// CHECK: %[[SHIFTS:.*]] = memref.alloca() : memref<16xf32>
// CHECK: %[[END:.*]] = arith.minsi
// CHECK: %[[GROUPS:.*]] = arith.muli
// CHECK: scf.for %[[G:.*]] = %c0 to %[[GROUPS]] step %c16 {
// CHECK: scf.for %[[R:.*]] = %c0 to %c16 step %c1 {
// CHECK: vector.load %[[SCORES:[a-z0-9_]+]]
// CHECK: arith.maxnumf {{.*}} fastmath<nnan> : vector<16xf32>
// CHECK: vector.store {{.*}}, %[[PARTIALS]][%[[R]], %c0]
// CHECK: }
// CHECK-COUNT-16: vector.load %[[PARTIALS]]
// CHECK-COUNT-2: vector.shuffle
// CHECK: arith.maxnumf {{.*}} fastmath<nnan> : vector<16xf32>
// CHECK: %[[OLDMAX:.*]] = vector.load %[[MAX:[a-z0-9_]+]][%[[G]]] : memref<32xf32>, vector<16xf32>
// CHECK: %[[NEWMAX:.*]] = arith.maximumf %[[OLDMAX]], %{{.*}} : vector<16xf32>
// CHECK: %[[NONE:.*]] = arith.cmpf oeq, %[[NEWMAX]], %{{.*}} : vector<16xf32>
// CHECK: %[[SHIFT:.*]] = arith.select %[[NONE]], %{{.*}}, %[[NEWMAX]]
// CHECK: %[[CORR:.*]] = math.exp2 %{{.*}} : vector<16xf32>
// CHECK: vector.store %[[SHIFT]], %[[SHIFTS]][%c0]
// CHECK: scf.for %[[R2:.*]] = %c0 to %c16 step %c1 {
// CHECK: %[[S:.*]] = vector.load %[[SCORES]]{{.*}} vector<64xf32>
// CHECK: %[[RSHIFT:.*]] = memref.load %[[SHIFTS]][%[[R2]]]
// CHECK: %[[SHIFTED:.*]] = arith.subf %[[S]], %{{.*}} : vector<64xf32>
// CHECK: %[[P:.*]] = math.exp2 %[[SHIFTED]] : vector<64xf32>
// CHECK-NOT: arith.cmpf oeq, %[[S]]
// CHECK: vector.store %[[P]], %[[SCORES]]
// CHECK: arith.addf {{.*}} : vector<16xf32>
// CHECK: vector.store {{.*}}, %[[PARTIALS]][%[[R2]], %c0]
// CHECK: }
// CHECK-COUNT-16: vector.load %[[PARTIALS]]
// CHECK-COUNT-2: vector.shuffle
// CHECK: arith.addf {{.*}} : vector<16xf32>
// CHECK: %[[RESCALED:.*]] = arith.mulf %{{.*}}, %[[CORR]] : vector<16xf32>
// CHECK: %[[NEWSUM:.*]] = arith.addf %[[RESCALED]], %{{.*}} : vector<16xf32>
// CHECK: vector.store %[[NEWMAX]], %[[MAX]][%[[G]]]
// CHECK: vector.store %[[NEWSUM]], %{{.*}}[%[[G]]]
// CHECK: vector.store %[[CORR]], %{{.*}}[%[[G]]]
// CHECK: }
// CHECK: scf.for %[[I:.*]] = %[[GROUPS]] to %[[END]] step %c1 {
// CHECK: %[[S1:.*]] = vector.load %[[SCORES]][%[[I]], %c0] : memref<32x64xf32>, vector<64xf32>
// CHECK: %[[OLDMAX1:.*]] = memref.load %[[MAX]][%[[I]]]
// CHECK: %[[BMAX1:.*]] = vector.reduction <maxnumf>, %[[S1]] fastmath<nnan>
// CHECK: %[[NEWMAX1:.*]] = arith.maximumf %[[OLDMAX1]], %[[BMAX1]]
// CHECK: %[[CORR1:.*]] = math.exp2 %{{.*}} : f32
// CHECK: %[[P1:.*]] = math.exp2 %{{.*}} : vector<64xf32>
// CHECK: vector.reduction <add>, %[[P1]]
// CHECK: memref.store %[[NEWMAX1]], %[[MAX]][%[[I]]]
// CHECK: memref.store %[[CORR1]], %{{.*}}[%[[I]]]
// CHECK: vector.store %[[P1]], %[[SCORES]][%[[I]], %c0]
// AVX2-LABEL: func.func @softmax_rows
// AVX2: memref.alloca() : memref<8x8xf32>
// AVX2: scf.for %{{.*}} = %c0 to %{{.*}} step %c8 {
// AVX2-COUNT-8: vector.load {{.*}} : memref<8x8xf32>, vector<8xf32>
// AVX2: math.exp2 %{{.*}} : vector<8xf32>
func.func @softmax_rows(%s: memref<32x64xf32>, %max: memref<32xf32>, %sum: memref<32xf32>, %corr: memref<32xf32>, %keys: f32, %rows: index) {
  attn.tile_normalize %s rows %rows keys %keys normalizer(#attn.softmax) state %max, %sum : memref<32xf32>, memref<32xf32> correction %corr : memref<32xf32> : memref<32x64xf32>
  return
}

// -----

// A custom normalizer's scalar body is replayed over the whole score row. tanh(-inf) / 2 is
// not 0, so masked scores keep their select.
// CHECK-LABEL: func.func @custom_rows
// CHECK: %[[S:.*]] = vector.load {{.*}} vector<64xf32>
// CHECK: %[[T:.*]] = math.tanh %[[S]] : vector<64xf32>
// CHECK: %[[H:.*]] = arith.mulf %[[T]], %{{.*}} : vector<64xf32>
// CHECK: %[[MASKED:.*]] = arith.cmpf oeq, %[[S]], %{{.*}} : vector<64xf32>
// CHECK: arith.select %[[MASKED]], %{{.*}}, %[[H]]
func.func @custom_rows(%s: memref<8x64xf32>, %keys: f32, %rows: index) {
  attn.tile_normalize %s rows %rows keys %keys normalizer(#attn.custom) : memref<8x64xf32> normalizer_body {
  ^bb0(%x: f32):
    %half = arith.constant 0.5 : f32
    %t = math.tanh %x : f32
    %h = arith.mulf %t, %half : f32
    attn.yield %h : f32
  }
  return
}

// -----

// Packing a key block transposed: a full block moves in 16 x 16 squares transposed in
// registers (shuffles, no per-element stores); a partial block element by element in loops,
// zero-filled.
// CHECK-LABEL: func.func @pack_keys
// CHECK: %[[FULL:.*]] = arith.cmpi eq
// CHECK: scf.if %[[FULL]] {
// CHECK: vector.shuffle
// CHECK: } else {
// CHECK: scf.for
// CHECK: memref.load
// CHECK: memref.store
func.func @pack_keys(%k: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %b: index, %h: index, %start: index, %count: index) {
  %t = memref.alloca() : memref<64x128xf32>
  attn.tile_load %k[%b, %h, %start] rows %count into %t {transpose} : memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, memref<64x128xf32>
  return
}

// -----

// The mask region classifies a block with vector compares over 16 keys at a time: "some key
// allowed" and "every valid key allowed" are carried as vectors over key chunks (outer, so the
// region's key-only work is done once per chunk) and rows (inner, the row a scalar), and
// reduced once; lanes past the valid keys count for neither.
// CHECK-LABEL: func.func @classify
// CHECK: %[[CHUNKS:.*]]:2 = scf.for {{.*}} step %c16 iter_args({{.*}}) -> (vector<16xi1>, vector<16xi1>)
// CHECK: %[[VALID:.*]] = arith.cmpi slt, {{.*}} : vector<16xindex>
// CHECK: scf.for {{.*}} step %c1 iter_args
// CHECK: %[[KEEP:.*]] = arith.cmpi sle, {{.*}} : vector<16xindex>
// CHECK: arith.andi %[[KEEP]], %[[VALID]] : vector<16xi1>
// CHECK: %[[SOME:.*]] = vector.reduction <or>, %[[CHUNKS]]#0
// CHECK: %[[ALL:.*]] = vector.reduction <and>, %[[CHUNKS]]#1
// CHECK: %[[FULL_OR_PARTIAL:.*]] = arith.select %[[ALL]], %c1, %c2
// CHECK: arith.select %[[SOME]], %[[FULL_OR_PARTIAL]], %c0
// AVX2-LABEL: func.func @classify
// AVX2: vector<8xindex>
func.func @classify(%rows: index, %cols: index, %b: index, %h: index, %r0: index, %c0: index) -> index {
  %kind = attn.tile_mask_classify rows %rows cols %cols batch %b head %h at %r0, %c0 : index {
  ^bb0(%bb: index, %hh: index, %i: index, %j: index):
    %keep = arith.cmpi sle, %j, %i : index
    attn.yield %keep : i1
  }
  return %kind : index
}

// -----

// With a block map, an entry of 0, 1 or 2 is the kind; any other (3: unclassified) classifies
// the block as above and writes the entry. An index outside the map reads as unclassified and
// writes nothing.
// CHECK-LABEL: func.func @classify_with_map
// CHECK-SAME: %[[MAP:[^:]*]]: memref<?x?x?x?xi8>, %[[QT:[^:]*]]: index, %[[KB:[^:]*]]: index)
// CHECK: %[[ENTRY:.*]] = scf.if %[[INSIDE:[^ ]*]] -> (index) {
// CHECK: memref.load %[[MAP]][%c0, %c0, %[[QT]], %[[KB]]] : memref<?x?x?x?xi8>
// CHECK: } else {
// CHECK-NEXT: scf.yield %c3 : index
// CHECK: %[[KNOWN:.*]] = arith.cmpi ult, %[[ENTRY]], %c3 : index
// CHECK: %[[KIND:.*]] = scf.if %[[KNOWN]] -> (index) {
// CHECK-NEXT: scf.yield %[[ENTRY]] : index
// CHECK: } else {
// CHECK: vector.reduction <or>
// CHECK: arith.select
// CHECK-NEXT: %[[CLASSIFIED:.*]] = arith.select
// CHECK-NEXT: scf.if %[[INSIDE]] {
// CHECK: %[[NARROW:.*]] = arith.trunci %{{.*}} : i64 to i8
// CHECK: memref.store %[[NARROW]], %[[MAP]][%c0, %c0, %[[QT]], %[[KB]]]
// CHECK: scf.yield %[[CLASSIFIED]] : index
// CHECK: return %[[KIND]] : index
func.func @classify_with_map(%rows: index, %cols: index, %b: index, %h: index, %r0: index,
                             %c0: index, %map: memref<?x?x?x?xi8>, %qt: index, %kb: index) -> index {
  %zero = arith.constant 0 : index
  %kind = attn.tile_mask_classify rows %rows cols %cols batch %b head %h at %r0, %c0
      map %map[%zero, %zero, %qt, %kb] : memref<?x?x?x?xi8> : index {
  ^bb0(%bb: index, %hh: index, %i: index, %j: index):
    %keep = arith.cmpi sle, %j, %i : index
    attn.yield %keep : i1
  }
  return %kind : index
}

// -----

// A score_mod reading captured tensors: a read at indices that vary over the keys (a relative
// position table, by q - k) is one vector.gather from the flattened capture; a read at uniform
// indices (a per-head slope) is one scalar load per row. Both are bounds-checked: an index
// outside its dimension is replaced by 0 and sets the capture's fault flag (fault[0] for the
// table, fault[1] for the slopes). Padding lanes are held at the last valid key, so they never
// read past the sequence.
// CHECK-LABEL: func.func @captured_bias
// CHECK-DAG: %[[LAST:.*]] = arith.maxsi %{{.*}}, %c0 : index
// CHECK: arith.minsi %{{.*}}, %{{.*}} : vector<16xindex>
// CHECK: scf.for
// CHECK: %[[INSIDE:.*]] = arith.andi %{{.*}}, %{{.*}} : vector<16xi1>
// CHECK: %[[ALL:.*]] = vector.reduction <and>, %{{.*}} : vector<16xi1> into i1
// CHECK: scf.if
// CHECK: memref.atomic_rmw assign %c1_i32, %[[FAULT:.*]][%c0] : (i32, memref<?xi32>) -> i32
// CHECK: %[[FLAT:.*]] = memref.collapse_shape %[[TABLE:.*]] {{\[\[}}0, 1]] : memref<?x?xf32> into memref<?xf32>
// CHECK: vector.gather %[[FLAT]][%c0] [%{{.*}}], %{{.*}}, %{{.*}} : memref<?xf32>, vector<16xindex>, vector<16xi1>, vector<16xf32> into vector<16xf32>
// CHECK: scf.if
// CHECK: memref.atomic_rmw assign %c1_i32, %[[FAULT]][%c1] : (i32, memref<?xi32>) -> i32
// CHECK: memref.load %[[SLOPES:.*]][%{{.*}}] : memref<?xf32>
func.func @captured_bias(%s: memref<32x16xf32>, %rows: index, %cols: index, %b: index, %h: index,
                         %r0: index, %k0: index, %table: memref<?x?xf32>, %slopes: memref<?xf32>,
                         %fault: memref<?xi32>) {
  attn.tile_score_mod %s rows %rows cols %cols batch %b head %h at %r0, %k0
      captures(%table, %slopes : memref<?x?xf32>, memref<?xf32>) fault %fault : memref<?xi32>
      {multiplier = 1.0 : f64} : memref<32x16xf32> {
  ^bb0(%x: f32, %bb: index, %hh: index, %i: index, %j: index, %t: memref<?x?xf32>, %m: memref<?xf32>):
    %rel = arith.subi %i, %j : index
    %bias = memref.load %t[%hh, %rel] : memref<?x?xf32>
    %slope = memref.load %m[%hh] : memref<?xf32>
    %scaled = arith.mulf %slope, %bias : f32
    %r = arith.addf %x, %scaled : f32
    attn.yield %r : f32
  }
  return
}

// -----

// tile_capture_gradient, per row: the region replayed with a tangent for the score and for
// each f32 read; the table read (indices vary over the keys) scatters G * d/d(read) lane by
// lane into its gradient (two lanes may hit one element), lanes past the valid keys and masked
// scores (G = 0) contributing 0; the slope read (uniform) adds the row's sum once; then
// grads = G * d/ds (here the slope).
// CHECK-LABEL: func.func @capture_gradient
// CHECK: scf.for
// CHECK: %[[CONTRIBUTES:.*]] = arith.andi %{{.*}}, %{{.*}} : vector<16xi1>
// CHECK: %[[FLATGRAD:.*]] = memref.collapse_shape %[[TGRAD:.*]] {{\[\[}}0, 1]] : memref<?x?xf32> into memref<?xf32>
// CHECK-COUNT-16: memref.store %{{.*}}, %[[FLATGRAD]][%{{.*}}] : memref<?xf32>
// CHECK: %[[SUM:.*]] = vector.reduction <add>, %{{.*}} : vector<16xf32> into f32
// CHECK: memref.store %{{.*}}, %[[MGRAD:.*]][%{{.*}}] : memref<?xf32>
// CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}, %c0] : memref<32x16xf32>, vector<16xf32>
func.func @capture_gradient(%raw: memref<32x16xf32>, %g: memref<32x16xf32>, %rows: index, %cols: index,
                            %b: index, %h: index, %r0: index, %k0: index, %table: memref<?x?xf32>,
                            %slopes: memref<?xf32>, %fault: memref<?xi32>, %dtable: memref<?x?xf32>,
                            %dslopes: memref<?xf32>) {
  attn.tile_capture_gradient %raw, %g rows %rows cols %cols batch %b head %h at %r0, %k0
      captures(%table, %slopes : memref<?x?xf32>, memref<?xf32>) fault %fault : memref<?xi32>
      gradients(%dtable, %dslopes : memref<?x?xf32>, memref<?xf32>) : memref<32x16xf32>, memref<32x16xf32> {
  ^bb0(%x: f32, %bb: index, %hh: index, %i: index, %j: index, %t: memref<?x?xf32>, %m: memref<?xf32>):
    %rel = arith.subi %i, %j : index
    %bias = memref.load %t[%hh, %rel] : memref<?x?xf32>
    %slope = memref.load %m[%hh] : memref<?xf32>
    %scaled = arith.mulf %slope, %x : f32
    %r = arith.addf %scaled, %bias : f32
    attn.yield %r : f32
  }
  return
}
