// RUN: attn-opt %s --attn-legalize --split-input-file --verify-diagnostics | FileCheck %s --enable-var-scope

// The default scale 1/sqrt(D) becomes explicit; softmax has no other default.
// CHECK-LABEL: func.func @scale_default
// CHECK: normalizer(#attn.softmax) {scale = 1.250000e-01 : f32}
func.func @scale_default(%q: tensor<1x2x8x64xf32>) -> tensor<1x2x8x64xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x64xf32>, tensor<1x2x8x64xf32>, tensor<1x2x8x64xf32> -> tensor<1x2x8x64xf32>
  return %o : tensor<1x2x8x64xf32>
}

// -----

// A given scale is kept.
// CHECK-LABEL: func.func @scale_given
// CHECK: {causal, scale = 3.000000e-01 : f32}
func.func @scale_given(%q: tensor<1x2x8x64xf32>) -> tensor<1x2x8x64xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) {causal, scale = 0.3 : f32} : tensor<1x2x8x64xf32>, tensor<1x2x8x64xf32>, tensor<1x2x8x64xf32> -> tensor<1x2x8x64xf32>
  return %o : tensor<1x2x8x64xf32>
}

// -----

// Sigmoid's default bias -ln(Sk) is never frozen from a static Sk (1024 here): the kernel
// computes it from the run-time key length, so the variant means the same at every size.
// CHECK-LABEL: func.func @sigmoid_static_length
// CHECK: normalizer(#attn.sigmoid) {scale = 0.08838{{[0-9]*}} : f32}
func.func @sigmoid_static_length(%q: tensor<1x2x16x128xf16>, %k: tensor<1x2x1024x128xf16>) -> tensor<1x2x16x128xf16> {
  %o = attn.attention %q, %k, %k normalizer(#attn.sigmoid) : tensor<1x2x16x128xf16>, tensor<1x2x1024x128xf16>, tensor<1x2x1024x128xf16> -> tensor<1x2x16x128xf16>
  return %o : tensor<1x2x16x128xf16>
}

// -----

// An explicit bias is kept.
// CHECK-LABEL: func.func @sigmoid_explicit
// CHECK: normalizer(#attn.sigmoid<bias = -1.000000e+00>)
func.func @sigmoid_explicit(%q: tensor<1x2x16x64xf16>) -> tensor<1x2x16x64xf16> {
  %o = attn.attention %q, %q, %q normalizer(#attn.sigmoid<bias = -1.0>) : tensor<1x2x16x64xf16>, tensor<1x2x16x64xf16>, tensor<1x2x16x64xf16> -> tensor<1x2x16x64xf16>
  return %o : tensor<1x2x16x64xf16>
}

// -----

// Dynamic Sk: the bias stays to be computed from the run-time length; the scale is filled.
// CHECK-LABEL: func.func @sigmoid_dynamic_length
// CHECK: normalizer(#attn.sigmoid) {scale = 1.250000e-01 : f32}
func.func @sigmoid_dynamic_length(%q: tensor<?x2x?x64xbf16>, %k: tensor<?x2x?x64xbf16>) -> tensor<?x2x?x64xbf16> {
  %o = attn.attention %q, %k, %k normalizer(#attn.sigmoid) : tensor<?x2x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x2x?x64xbf16> -> tensor<?x2x?x64xbf16>
  return %o : tensor<?x2x?x64xbf16>
}

// -----

// ReLU's default scale 1/Sk stays unset with a static Sk = 256 too.
// CHECK-LABEL: func.func @relu_static_length
// CHECK: normalizer(#attn.relu) {scale = 0.17677{{[0-9]*}} : f32}
func.func @relu_static_length(%q: tensor<1x2x16x32xf32>, %k: tensor<1x2x256x32xf32>) -> tensor<1x2x16x32xf32> {
  %o = attn.attention %q, %k, %k normalizer(#attn.relu) : tensor<1x2x16x32xf32>, tensor<1x2x256x32xf32>, tensor<1x2x256x32xf32> -> tensor<1x2x16x32xf32>
  return %o : tensor<1x2x16x32xf32>
}

// -----

// Legalizing twice changes nothing more.
// CHECK-LABEL: func.func @idempotent
// CHECK: normalizer(#attn.relu<scale = 1.250000e-01>) {scale = 2.500000e-01 : f32}
func.func @idempotent(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.relu<scale = 0.125>) {scale = 0.25 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

// The bias becomes the last capture; the score_mod (here created, there was none) adds
// bias[b, 0, q, k]: its head dimension is a broadcast 1. The mask region gets the argument too.
// CHECK-LABEL: func.func @bias_to_capture
// CHECK: attn.attention %{{[^ ]*}}, %{{[^ ]*}}, %{{[^ ]*}} captures(%[[DOCS:.*]], %[[BIAS:.*]] : tensor<?xi32>, tensor<?x1x?x?xf32>) normalizer(#attn.softmax)
// CHECK: score_mod {
// CHECK: ^bb0(%[[S:[^:]*]]: f32, %[[B:[^:]*]]: index, %{{[^:]*}}: index, %[[Q:[^:]*]]: index, %[[K:[^:]*]]: index, %{{[^:]*}}: tensor<?xi32>, %[[T:[^:]*]]: tensor<?x1x?x?xf32>):
// CHECK: %[[X:.*]] = tensor.extract %[[T]][%[[B]], %c0, %[[Q]], %[[K]]]
// CHECK: %[[SUM:.*]] = arith.addf %[[S]], %[[X]] : f32
// CHECK: attn.yield %[[SUM]] : f32
// CHECK: mask {
// CHECK: ^bb0({{.*}}: tensor<?xi32>, %{{[^:]*}}: tensor<?x1x?x?xf32>):
func.func @bias_to_capture(%q: tensor<?x2x?x16xf32>, %docs: tensor<?xi32>, %bias: tensor<?x1x?x?xf32>) -> tensor<?x2x?x16xf32> {
  %o = attn.attention %q, %q, %q bias(%bias : tensor<?x1x?x?xf32>) captures(%docs : tensor<?xi32>) normalizer(#attn.softmax) : tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32> -> tensor<?x2x?x16xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?xi32>):
    %di = tensor.extract %d[%i] : tensor<?xi32>
    %dj = tensor.extract %d[%j] : tensor<?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

// An existing score_mod keeps its work; the bias is added to what it yields.
// CHECK-LABEL: func.func @bias_after_score_mod
// CHECK: %[[HALF:.*]] = arith.mulf
// CHECK: %[[X:.*]] = tensor.extract
// CHECK: arith.addf %[[HALF]], %[[X]] : f32
func.func @bias_after_score_mod(%q: tensor<?x2x?x16xf32>, %bias: tensor<?x2x?x?xf32>) -> tensor<?x2x?x16xf32> {
  %o = attn.attention %q, %q, %q bias(%bias : tensor<?x2x?x?xf32>) normalizer(#attn.softmax) : tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32> -> tensor<?x2x?x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %half = arith.constant 0.5 : f32
    %r = arith.mulf %s, %half : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x2x?x16xf32>
}

// -----

func.func @bias_f16(%q: tensor<1x2x8x16xf16>, %bias: tensor<1x2x8x8xf16>) -> tensor<1x2x8x16xf16> {
  // expected-error @+1 {{the tiled kernels take an f32 bias, got 'f16' (convert it first)}}
  %o = attn.attention %q, %q, %q bias(%bias : tensor<1x2x8x8xf16>) normalizer(#attn.softmax) : tensor<1x2x8x16xf16>, tensor<1x2x8x16xf16>, tensor<1x2x8x16xf16> -> tensor<1x2x8x16xf16>
  return %o : tensor<1x2x8x16xf16>
}
