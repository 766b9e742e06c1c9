// RUN: attn-opt %s | attn-opt | FileCheck %s --enable-var-scope
// RUN: attn-opt %s --mlir-print-op-generic | attn-opt | FileCheck %s --enable-var-scope

// CHECK-LABEL: func.func @softmax_minimal
// CHECK-SAME: (%[[Q:.*]]: tensor<1x2x16x32xf32>, %[[K:.*]]: tensor<1x2x16x32xf32>, %[[V:.*]]: tensor<1x2x16x32xf32>)
// CHECK: attn.attention %[[Q]], %[[K]], %[[V]] normalizer(#attn.softmax) :
// CHECK-SAME: tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32> -> tensor<1x2x16x32xf32>
func.func @softmax_minimal(%q: tensor<1x2x16x32xf32>, %k: tensor<1x2x16x32xf32>, %v: tensor<1x2x16x32xf32>) -> tensor<1x2x16x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32> -> tensor<1x2x16x32xf32>
  return %o : tensor<1x2x16x32xf32>
}

// CHECK-LABEL: func.func @softmax1
// CHECK: normalizer(#attn.softmax1)
func.func @softmax1(%q: tensor<1x2x16x32xf32>) -> tensor<1x2x16x32xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax1) : tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32> -> tensor<1x2x16x32xf32>
  return %o : tensor<1x2x16x32xf32>
}

// Dynamic batch, heads and lengths; GQA; Dv != D; every attribute and optional operand.
// CHECK-LABEL: func.func @everything
// CHECK: attn.attention %{{.*}}, %{{.*}}, %{{.*}} bias(%{{.*}} : tensor<?x1x?x?xbf16>) kv_lengths(%{{.*}} : tensor<?xi64>)
// CHECK-SAME: normalizer(#attn.sigmoid<bias = -2.500000e+00>) {causal, scale = 2.500000e-01 : f32, window = 64 : i64}
// CHECK-SAME: -> tensor<?x?x?x16xbf16>
func.func @everything(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x16xbf16>,
                      %bias: tensor<?x1x?x?xbf16>, %len: tensor<?xi64>) -> tensor<?x?x?x16xbf16> {
  %o = attn.attention %q, %k, %v bias(%bias : tensor<?x1x?x?xbf16>) kv_lengths(%len : tensor<?xi64>)
      normalizer(#attn.sigmoid<bias = -2.5>) {causal, scale = 0.25 : f32, window = 64}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x16xbf16> -> tensor<?x?x?x16xbf16>
  return %o : tensor<?x?x?x16xbf16>
}

// CHECK-LABEL: func.func @relu_forms
// CHECK: normalizer(#attn.relu)
// CHECK: normalizer(#attn.relu<scale = 1.000000e-02>)
// CHECK: normalizer(#attn.sigmoid)
func.func @relu_forms(%q: tensor<2x8x128x64xf16>, %kv: tensor<2x2x128x64xf16>) -> (tensor<2x8x128x64xf16>, tensor<2x8x128x64xf16>, tensor<2x8x128x64xf16>) {
  %a = attn.attention %q, %kv, %kv normalizer(#attn.relu) : tensor<2x8x128x64xf16>, tensor<2x2x128x64xf16>, tensor<2x2x128x64xf16> -> tensor<2x8x128x64xf16>
  %b = attn.attention %q, %kv, %kv normalizer(#attn.relu<scale = 0.01>) : tensor<2x8x128x64xf16>, tensor<2x2x128x64xf16>, tensor<2x2x128x64xf16> -> tensor<2x8x128x64xf16>
  %c = attn.attention %q, %kv, %kv normalizer(#attn.sigmoid) : tensor<2x8x128x64xf16>, tensor<2x2x128x64xf16>, tensor<2x2x128x64xf16> -> tensor<2x8x128x64xf16>
  return %a, %b, %c : tensor<2x8x128x64xf16>, tensor<2x8x128x64xf16>, tensor<2x8x128x64xf16>
}

// CHECK-LABEL: func.func @custom_and_score_mod
// CHECK: normalizer(#attn.custom)
// CHECK: normalizer_body {
// CHECK-NEXT: ^bb0(%[[S:.*]]: f32):
// CHECK-NEXT: %[[T:.*]] = math.tanh %[[S]] : f32
// CHECK-NEXT: attn.yield %[[T]] : f32
// CHECK: score_mod {
// CHECK-NEXT: ^bb0(%[[S2:.*]]: f32, %{{.*}}: index, %{{.*}}: index, %[[QI:.*]]: index, %[[KI:.*]]: index):
// CHECK: arith.subi %[[QI]], %[[KI]] : index
// CHECK: attn.yield %{{.*}} : f32
func.func @custom_and_score_mod(%q: tensor<1x1x8x16xf64>, %k: tensor<1x1x8x16xf64>, %v: tensor<1x1x8x16xf64>) -> tensor<1x1x8x16xf64> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom)
      : tensor<1x1x8x16xf64>, tensor<1x1x8x16xf64>, tensor<1x1x8x16xf64> -> tensor<1x1x8x16xf64>
  normalizer_body {
  ^bb0(%s: f32):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  }
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %d = arith.subi %i, %j : index
    %di = arith.index_cast %d : index to i64
    %df = arith.sitofp %di : i64 to f32
    %r = arith.addf %s, %df : f32
    attn.yield %r : f32
  }
  return %o : tensor<1x1x8x16xf64>
}

// CHECK-LABEL: func.func @reparam
// CHECK: %{{.*}}, %{{.*}} = attn.reparam_linear %{{.*}}, %{{.*}} gamma(%{{.*}} : tensor<1xf32>) u(%{{.*}} : tensor<64xf32>) :
// CHECK-SAME: tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>, tensor<64xf32>
// CHECK: attn.reparam_linear {{.*}} bias({{.*}}) {{.*}} {training}
func.func @reparam(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>, %b: tensor<32xf32>, %g: tensor<1xf32>, %u: tensor<64xf32>) -> (tensor<?x32xf32>, tensor<64xf32>) {
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<1xf32>) u(%u : tensor<64xf32>) : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>, tensor<64xf32>
  %y2, %u3 = attn.reparam_linear %x, %w bias(%b : tensor<32xf32>) gamma(%g : tensor<1xf32>) u(%u2 : tensor<64xf32>) {training} : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>, tensor<64xf32>
  return %y2, %u3 : tensor<?x32xf32>, tensor<64xf32>
}

// A normalizer parameter may be written as an integer; it prints as the float it is.
// CHECK-LABEL: func.func @integer_parameter
// CHECK: normalizer(#attn.sigmoid<bias = -2.000000e+00>)
// CHECK: normalizer(#attn.relu<scale = 1.000000e+00>)
func.func @integer_parameter(%q: tensor<1x1x4x8xf32>) -> (tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32>) {
  %a = attn.attention %q, %q, %q normalizer(#attn.sigmoid<bias = -2>) : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
  %b = attn.attention %q, %q, %q normalizer(#attn.relu<scale = 1>) : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
  return %a, %b : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32>
}

// A mask region after the score_mod.
// CHECK-LABEL: func.func @mask_region
// CHECK: score_mod {
// CHECK: mask {
// CHECK: ^bb0(%{{.*}}: index, %{{.*}}: index, %[[I:.*]]: index, %[[J:.*]]: index):
// CHECK: %[[KEEP:.*]] = arith.cmpi sle, %[[J]], %[[I]] : index
// CHECK: attn.yield %[[KEEP]] : i1
func.func @mask_region(%q: tensor<1x2x16x32xf32>) -> tensor<1x2x16x32xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32>, tensor<1x2x16x32xf32> -> tensor<1x2x16x32xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %half = arith.constant 0.5 : f32
    %r = arith.mulf %s, %half : f32
    attn.yield %r : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %keep = arith.cmpi sle, %j, %i : index
    attn.yield %keep : i1
  }
  return %o : tensor<1x2x16x32xf32>
}

// Captured tensors: operands after kv_lengths, one more argument per capture in each region,
// read element by element with tensor.extract.
// CHECK-LABEL: func.func @captures
// CHECK: attn.attention %{{.*}}, %{{.*}}, %{{.*}} kv_lengths(%{{.*}} : tensor<?xi64>) captures(%[[DOCS:.*]], %[[TABLE:.*]] : tensor<?x?xi32>, tensor<?x?xf32>) normalizer(#attn.softmax)
// CHECK: score_mod {
// CHECK: ^bb0(%{{.*}}: f32, %{{.*}}: index, %[[H:.*]]: index, %{{.*}}: index, %{{.*}}: index, %{{.*}}: tensor<?x?xi32>, %[[T:.*]]: tensor<?x?xf32>):
// CHECK: tensor.extract %[[T]][%[[H]], %{{.*}}] : tensor<?x?xf32>
// CHECK: mask {
// CHECK: ^bb0(%[[B:.*]]: index, %{{.*}}: index, %[[I:.*]]: index, %[[J:.*]]: index, %[[D:.*]]: tensor<?x?xi32>, %{{.*}}: tensor<?x?xf32>):
// CHECK: tensor.extract %[[D]][%[[B]], %[[I]]] : tensor<?x?xi32>
// CHECK: tensor.extract %[[D]][%[[B]], %[[J]]] : tensor<?x?xi32>
func.func @captures(%q: tensor<?x4x?x32xf32>, %lengths: tensor<?xi64>, %docs: tensor<?x?xi32>,
                    %table: tensor<?x?xf32>) -> tensor<?x4x?x32xf32> {
  %o = attn.attention %q, %q, %q kv_lengths(%lengths : tensor<?xi64>)
      captures(%docs, %table : tensor<?x?xi32>, tensor<?x?xf32>) normalizer(#attn.softmax)
      : tensor<?x4x?x32xf32>, tensor<?x4x?x32xf32>, tensor<?x4x?x32xf32> -> tensor<?x4x?x32xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %t: tensor<?x?xf32>):
    %rel = arith.subi %i, %j : index
    %bias = tensor.extract %t[%h, %rel] : tensor<?x?xf32>
    %r = arith.addf %s, %bias : f32
    attn.yield %r : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %t: tensor<?x?xf32>):
    %di = tensor.extract %d[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %d[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  return %o : tensor<?x4x?x32xf32>
}

// A fused σReparam QKV projection seen as heads (GQA: 4 query heads, 2 key/value heads).
// CHECK-LABEL: func.func @split_heads
// CHECK: attn.split_heads %{{.*}} {heads = 4 : i64, kv_heads = 2 : i64} : tensor<?x?x128xf32> -> tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>
func.func @split_heads(%y: tensor<?x?x128xf32>) -> (tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>) {
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<?x?x128xf32> -> tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>
  return %q, %k, %v : tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>
}

// The folded form of an elementwise normalizer (attn-tile's fold-normalizer): the score
// product's init, the folded tile_normalize and the mask's fill, printed and parsed back.
// CHECK-LABEL: func.func @folded_tiles
// CHECK: attn.tile_matmul %{{.*}}, %{{.*}} into %[[S:.*]] extents(%{{.*}}, %{{.*}}, %{{.*}}) init %{{.*}} : memref<32x64xf32>, memref<64x64xf32>, memref<32x64xf32>
// CHECK: attn.tile_normalize %[[S]] rows %{{.*}} keys %{{.*}} normalizer(#attn.sigmoid) {folded} : memref<32x64xf32>
// CHECK: attn.tile_mask %[[S]] at %{{.*}}, %{{.*}} lengths %{{.*}}, %{{.*}} {causal, fill = 0.000000e+00 : f32} : memref<32x64xf32>
func.func @folded_tiles(%q: memref<32x64xf32>, %kt: memref<64x64xf32>, %s: memref<32x64xf32>, %offset: f32, %keys: f32, %n: index) {
  attn.tile_matmul %q, %kt into %s extents(%n, %n, %n) init %offset : memref<32x64xf32>, memref<64x64xf32>, memref<32x64xf32>
  attn.tile_normalize %s rows %n keys %keys normalizer(#attn.sigmoid) {folded} : memref<32x64xf32>
  attn.tile_mask %s at %n, %n lengths %n, %n {causal, fill = 0.0 : f32} : memref<32x64xf32>
  return
}
