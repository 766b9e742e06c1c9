// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile --verify-diagnostics --canonicalize --cse | FileCheck %s --enable-var-scope

// Softmax: the flash loop. Per K/V block and row: scores and their max, then the rescale
// factor exp2(old - new), then p = exp2(s - max) summed and accumulated; the finalize divides
// by the sum and writes the base-2 log-sum-exp. log2(e) is folded into the q multiplier.
// CHECK-LABEL: func.func @softmax_fwd
// CHECK-SAME: (%[[Q:.*]]: memref<?x?x?x?xf32, strided<[?, ?, ?, 1], offset: ?>>, %[[K:.*]]: memref{{.*}}, %[[V:.*]]: memref{{.*}}, %[[O:.*]]: memref{{.*}}, %[[LSE:.*]]: memref<?x?x?xf32, strided<[?, ?, ?], offset: ?>>, %[[B:.*]]: index, %[[H:.*]]: index, %[[Q0:.*]]: index)
// CHECK-SAME: attributes {llvm.emit_c_interface}
// CHECK-DAG: %[[QMUL:.*]] = arith.constant dense<0.180336878> : vector<64xf32>
// CHECK-DAG: %[[MAXES:.*]] = memref.alloca() : memref<32xf32>
// CHECK-DAG: %[[SUMS:.*]] = memref.alloca() : memref<32xf32>
// CHECK: scf.for
// CHECK: %[[QROW:.*]] = vector.load %[[Q]]
// CHECK: arith.mulf %[[QROW]], %[[QMUL]]
// CHECK: scf.for %[[JB:.*]] = %{{.*}} to %[[HI:.*]] step %c64
// CHECK: scf.for %[[R:.*]] =
// CHECK: scf.if
// CHECK: %[[BMAX:.*]] = scf.for {{.*}} -> (f32)
// CHECK: vector.load %[[K]]
// CHECK: vector.reduction <add>
// CHECK: arith.maximumf
// CHECK: %[[NEWMAX:.*]] = arith.maximumf %{{.*}}, %[[BMAX]]
// The shift is the new max, or 0 while the row has seen only -inf (no NaN from -inf - -inf).
// CHECK: %[[EMPTY:.*]] = arith.cmpf oeq, %[[NEWMAX]], %{{.*}}
// CHECK: %[[SHIFT:.*]] = arith.select %[[EMPTY]], %{{.*}}, %[[NEWMAX]]
// CHECK: %[[OLDMINUS:.*]] = arith.subf %{{.*}}, %[[SHIFT]]
// CHECK: %[[CORR:.*]] = math.exp2 %[[OLDMINUS]]
// CHECK: arith.mulf %{{.*}}, %{{.*}} : vector<64xf32>
// CHECK: scf.for {{.*}} -> (f32, vector<64xf32>)
// CHECK: %[[SH:.*]] = arith.subf %{{.*}}, %[[SHIFT]]
// CHECK: %[[P:.*]] = math.exp2 %[[SH]]
// CHECK: arith.addf %{{.*}}, %[[P]]
// CHECK: vector.load %[[V]]
// CHECK: vector.fma
// CHECK: arith.mulf %{{.*}}, %[[CORR]] : f32
// Finalize.
// CHECK: arith.divf
// CHECK: math.log2
// CHECK: memref.store %{{.*}}, %[[LSE]]
// CHECK: vector.store %{{.*}}, %[[O]]
// CHECK-NOT: func.func @softmax(
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}

// -----

// Sigmoid: elementwise, so one pass per block with no max, no exp2 rescale and no row sum;
// the default bias -ln(Sk) is computed from the run-time key length.
// CHECK-LABEL: func.func @sigmoid_fwd
// CHECK: %[[SK:.*]] = memref.dim %{{.*}}, %c2
// CHECK: %[[SKI:.*]] = arith.index_cast %[[SK]]
// CHECK: %[[SKF:.*]] = arith.sitofp %[[SKI]]
// CHECK: scf.for %{{.*}} step %c64
// CHECK: scf.for {{.*}} -> (vector<32xf32>)
// CHECK-NOT: arith.maximumf
// CHECK-NOT: math.exp2
// CHECK: vector.reduction <add>
// CHECK: %[[LN:.*]] = math.log %[[SKF]]
// CHECK: %[[NB:.*]] = arith.negf %[[LN]]
// CHECK: arith.addf %{{.*}}, %[[NB]]
// CHECK: math.exp
// CHECK: arith.divf
// CHECK: vector.fma
// CHECK-NOT: math.log2
// CHECK: vector.store
func.func @sigmoid(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  return %o : tensor<?x?x?x32xf32>
}

// -----

// Causal: each row's key range ends at row + 1, and the block loop ends at the tile's last
// row + 1 (blocks above the diagonal are skipped). GQA: kv head = h / (Hq / Hkv).
// CHECK-LABEL: func.func @causal_gqa_fwd
// CHECK-SAME: (%[[Q:arg0]]: {{.*}}, %[[K:arg1]]: {{.*}}, %[[HEAD:arg6]]: index, %[[Q0:arg7]]: index)
// CHECK-DAG: %[[HKV:.*]] = memref.dim %[[K]], %c1
// CHECK-DAG: %[[HQ:.*]] = memref.dim %[[Q]], %c1
// CHECK: %[[GROUP:.*]] = arith.divsi %[[HQ]], %[[HKV]]
// CHECK: arith.divsi %[[HEAD]], %[[GROUP]]
// CHECK: %[[ROWS:.*]] = arith.maxsi
// CHECK: %[[END:.*]] = arith.addi %[[Q0]], %[[ROWS]]
// CHECK: %[[TILEHI:.*]] = arith.minsi %{{.*}}, %[[END]]
// CHECK: scf.for %{{.*}} = %c0 to %[[TILEHI]] step %c64
func.func @causal_gqa(%q: tensor<?x8x?x64xf32>, %k: tensor<?x2x?x64xf32>, %v: tensor<?x2x?x64xf32>) -> tensor<?x8x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.relu<scale = 0.5>) {causal} : tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x64xf32> -> tensor<?x8x?x64xf32>
  return %o : tensor<?x8x?x64xf32>
}

// -----

// Sliding window: the block loop starts at max(0, q0 - W).
// CHECK-LABEL: func.func @window_fwd
// CHECK: %[[START:.*]] = arith.subi %{{.*}}, %c16
// CHECK: %[[LO:.*]] = arith.maxsi %[[START]], %c0
// CHECK: scf.for %{{.*}} = %[[LO]] to
func.func @window(%q: tensor<1x1x?x16xf32>, %k: tensor<1x1x?x16xf32>, %v: tensor<1x1x?x16xf32>) -> tensor<1x1x?x16xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal, window = 16} : tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32> -> tensor<1x1x?x16xf32>
  return %o : tensor<1x1x?x16xf32>
}

// -----

// Operands the tiled kernels do not lower yet are a diagnostic, not a crash.
func.func @with_bias(%q: tensor<1x1x8x16xf32>, %bias: tensor<1x1x8x8xf32>) -> tensor<1x1x8x16xf32> {
  // expected-error @+1 {{bias operand is not lowered by the tiled kernels yet}}
  %o = attn.attention %q, %q, %q bias(%bias : tensor<1x1x8x8xf32>) normalizer(#attn.softmax) : tensor<1x1x8x16xf32>, tensor<1x1x8x16xf32>, tensor<1x1x8x16xf32> -> tensor<1x1x8x16xf32>
  return %o : tensor<1x1x8x16xf32>
}

// -----

// A score_mod may mask with -inf: p is 0 there whatever the normalizer gives at -inf, and the
// row-wise shift never subtracts -inf from -inf (a block whose scores are all masked leaves the
// row state unchanged).
// CHECK-LABEL: func.func @masked_fwd
// CHECK: %[[NEGINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK: %[[BLOCKMAX:.*]] = scf.for {{.*}} -> (f32)
// CHECK: %[[NEWMAX:.*]] = arith.maximumf %{{.*}}, %[[BLOCKMAX]] : f32
// CHECK-NEXT: %[[EMPTY:.*]] = arith.cmpf oeq, %[[NEWMAX]], %[[NEGINF]]
// CHECK: arith.select %[[EMPTY]]
// CHECK: scf.for {{.*}} -> (f32, vector<32xf32>)
// CHECK: %[[S:.*]] = memref.load
// CHECK: %[[P:.*]] = math.exp2
// CHECK: %[[MASKED:.*]] = arith.cmpf oeq, %[[S]], %[[NEGINF]]
// CHECK: arith.select %[[MASKED]], %{{.*}}, %[[P]]
func.func @masked(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>) -> tensor<?x?x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32> -> tensor<?x?x?x32xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %c64 = arith.constant 64 : index
    %ninf = arith.constant 0xFF800000 : f32
    %early = arith.cmpi ult, %j, %c64 : index
    %r = arith.select %early, %ninf, %s : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x32xf32>
}

// -----

// A window beyond any sequence (found by the fuzzer: int64 max overflowed row + window + 1) is
// clamped to 2^30 keys, which covers every length the kernels run.
// CHECK-LABEL: func.func @huge_window_fwd
// CHECK-DAG: arith.constant 1073741824 : index
// CHECK-DAG: arith.constant 1073741825 : index
func.func @huge_window(%q: tensor<1x1x?x16xf32>) -> tensor<1x1x?x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) {window = 9223372036854775807}
      : tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32> -> tensor<1x1x?x16xf32>
  return %o : tensor<1x1x?x16xf32>
}
