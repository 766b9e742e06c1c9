// RUN: attn-opt %s --split-input-file --verify-diagnostics
// One case per verifier rule of the attn dialect; each names the operand and the numbers.

func.func @f(%q: tensor<2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{query must have rank 4 [B, Hq, Sq, D], got rank 3}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16x1xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{key must have rank 4 [B, Hkv, Sk, D], got rank 5}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16x1xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{value must have rank 4 [B, Hkv, Sk, Dv], got rank 3}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8xf32> {
  // expected-error @+1 {{result must have rank 4 [B, Hq, Sq, Dv], got rank 3}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8xf32>
  return %o : tensor<1x2x8xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xi32>, %k: tensor<1x2x8x16xi32>, %v: tensor<1x2x8x16xi32>) -> tensor<1x2x8x16xi32> {
  // expected-error @+1 {{query element type must be f16, bf16, f32 or f64, got 'i32'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xi32>, tensor<1x2x8x16xi32>, tensor<1x2x8x16xi32> -> tensor<1x2x8x16xi32>
  return %o : tensor<1x2x8x16xi32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf16>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{key element type 'f16' differs from query element type 'f32'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf16>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xbf16>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{value element type 'bf16' differs from query element type 'f32'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xbf16> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf16> {
  // expected-error @+1 {{result element type 'f16' differs from query element type 'f32'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf16>
  return %o : tensor<1x2x8x16xf16>
}

// -----

func.func @f(%q: tensor<1x2x8x?xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{head dims of query, key and value must be static, got ?, 16, 16}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x?xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x32xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{key head dim 32 differs from query head dim 16}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x32xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<3x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{batch sizes differ: query 1, key 3, value 1}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<3x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x1x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{value has 1 heads but key has 2}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x1x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x6x8x16xf32>, %k: tensor<1x4x8x16xf32>, %v: tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32> {
  // expected-error @+1 {{query heads (6) must be a multiple of key/value heads (4)}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x6x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32> -> tensor<1x6x8x16xf32>
  return %o : tensor<1x6x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x9x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{value sequence length 9 differs from key sequence length 8}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x9x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x32xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{result dim 3 is 16 but [B, Hq, Sq, Dv] gives 32}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x32xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{scale must be positive and finite, got -1.000000e+00}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {scale = -1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{scale must be positive and finite, got 0.000000e+00}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {scale = 0.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{window must be >= 0, got -4}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {window = -4} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %bias: tensor<8x8xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{bias must have rank 4 [B|1, Hq|1, Sq, Sk], got rank 2}}
  %o = attn.attention %q, %k, %v bias(%bias : tensor<8x8xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %bias: tensor<1x1x8x7xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{bias dim 3 is 7 but [B|1, Hq|1, Sq, Sk] gives 8}}
  %o = attn.attention %q, %k, %v bias(%bias : tensor<1x1x8x7xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %bias: tensor<1x3x8x8xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{bias dim 1 is 3 but [B|1, Hq|1, Sq, Sk] gives 2}}
  %o = attn.attention %q, %k, %v bias(%bias : tensor<1x3x8x8xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %bias: tensor<1x1x8x8xi8>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{bias element type must be a float, got 'i8'}}
  %o = attn.attention %q, %k, %v bias(%bias : tensor<1x1x8x8xi8>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %len: tensor<1x1xi32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{kv_lengths must have rank 1 [B], got rank 2}}
  %o = attn.attention %q, %k, %v kv_lengths(%len : tensor<1x1xi32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %len: tensor<1xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{kv_lengths element type must be a signless integer or index, got 'f32'}}
  %o = attn.attention %q, %k, %v kv_lengths(%len : tensor<1xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %len: tensor<4xi32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{kv_lengths has 4 entries but the batch is 1}}
  %o = attn.attention %q, %k, %v kv_lengths(%len : tensor<4xi32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{normalizer #attn.custom needs a normalizer_body region}}
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{normalizer_body is only allowed with #attn.custom, got #attn.softmax}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> normalizer_body {
  ^bb0(%s: f32):
    attn.yield %s : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{normalizer_body must take 1 arguments, got 2}}
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> normalizer_body {
  ^bb0(%s: f32, %t: f32):
    attn.yield %s : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{normalizer_body argument 0 must be 'f32', got 'f16'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> normalizer_body {
  ^bb0(%s: f16):
    %e = arith.extf %s : f16 to f32
    attn.yield %e : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{normalizer_body must yield exactly one f32, got 0 values}}
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> normalizer_body {
  ^bb0(%s: f32):
    attn.yield
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{normalizer_body must yield f32, got 'f64'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> normalizer_body {
  ^bb0(%s: f32):
    %e = arith.extf %s : f32 to f64
    attn.yield %e : f64
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{score_mod must take 5 arguments, got 1}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> score_mod {
  ^bb0(%s: f32):
    attn.yield %s : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{score_mod argument 3 must be 'index', got 'i32'}}
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32> score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: i32, %j: index):
    attn.yield %s : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.custom) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    // expected-error @+1 {{'ub.poison' op is not allowed in normalizer_body: an undefined value}}
    %e = ub.poison : f32
    attn.yield %e : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>, %c: f32) -> tensor<1x2x8x16xf32> {
  // expected-note @+1 {{required by region isolation constraints}}
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'arith.mulf' op using value defined outside the region}}
    %r = arith.mulf %s, %c : f32
    attn.yield %r : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{relu scale must be positive and finite, got -2.000000e+00}}
  %o = attn.attention %q, %q, %q normalizer(#attn.relu<scale = -2.0>) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{no parameter 'scale'; the parameter is 'bias'}}
  %o = attn.attention %q, %q, %q normalizer(#attn.sigmoid<scale = 2.0>) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{expected a number for 'bias'}}
  %o = attn.attention %q, %q, %q normalizer(#attn.sigmoid<bias = "low">) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{invalid kind of attribute specified}}
  %o = attn.attention %q, %q, %q normalizer(unit) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @f(%x: f32) -> f32 {
  // expected-error @+1 {{'attn.yield' op expects parent op to be one of 'attn.attention, attn.tile_score_mod}}
  attn.yield %x : f32
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x48xf32>, %g: tensor<f32>, %u: tensor<48xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{input has 64 features but weight [Out, In] expects 48}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<48xf32>) : tensor<4x64xf32>, tensor<32x48xf32> -> tensor<4x32xf32>, tensor<48xf32>
  return %y : tensor<4x32xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64x1xf32>, %g: tensor<f32>, %u: tensor<64xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{weight must have rank 2 [Out, In], got rank 3}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64x1xf32> -> tensor<4x32xf32>, tensor<64xf32>
  return %y : tensor<4x32xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %g: tensor<f32>, %u: tensor<32xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{u has 32 entries but weight has 64 input features}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<32xf32>) : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>, tensor<32xf32>
  return %y : tensor<4x32xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %g: tensor<2xf32>, %u: tensor<64xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{gamma must be a scalar (tensor<T> or tensor<1xT>), got 'tensor<2xf32>'}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<2xf32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>, tensor<64xf32>
  return %y : tensor<4x32xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %b: tensor<64xf32>, %g: tensor<f32>, %u: tensor<64xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{bias must be [Out] = [32], got 'tensor<64xf32>'}}
  %y, %u2 = attn.reparam_linear %x, %w bias(%b : tensor<64xf32>) gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>, tensor<64xf32>
  return %y : tensor<4x32xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64xf16>, %g: tensor<f32>, %u: tensor<64xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{weight element type 'f16' differs from input element type 'f32'}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64xf16> -> tensor<4x32xf32>, tensor<64xf32>
  return %y : tensor<4x32xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %g: tensor<f32>, %u: tensor<64xf32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{result has 16 features but weight has 32 output features}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x16xf32>, tensor<64xf32>
  return %y : tensor<4x16xf32>
}

// -----

func.func @f(%x: tensor<4x64xf32>, %w: tensor<32x64xf32>, %g: tensor<f32>, %u: tensor<64xf32>) -> tensor<5x32xf32> {
  // expected-error @+1 {{result dim 0 is 5 but input dim is 4}}
  %y, %u2 = attn.reparam_linear %x, %w gamma(%g : tensor<f32>) u(%u : tensor<64xf32>) : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<5x32xf32>, tensor<64xf32>
  return %y : tensor<5x32xf32>
}

// -----

// The tile ops' verifiers (AttnTileOps.cpp): shapes must contract, rescaling needs accumulate,
// the state tiles must match the normalizer's row state.
func.func @tile_matmul_shapes(%a: memref<32x64xf32>, %b: memref<32x64xf32>, %c: memref<32x64xf32>, %n: index) {
  // expected-error @+1 {{shapes do not contract}}
  attn.tile_matmul %a, %b into %c extents(%n, %n, %n) : memref<32x64xf32>, memref<32x64xf32>, memref<32x64xf32>
  return
}

// -----

func.func @tile_matmul_row_scale(%a: memref<32x64xf32>, %b: memref<64x64xf32>, %c: memref<32x64xf32>, %s: memref<32xf32>, %n: index) {
  // expected-error @+1 {{row_scale rescales the accumulator: it needs accumulate}}
  attn.tile_matmul %a, %b into %c extents(%n, %n, %n) row_scale %s : memref<32xf32> : memref<32x64xf32>, memref<64x64xf32>, memref<32x64xf32>
  return
}

// -----

func.func @tile_matmul_init_accumulate(%a: memref<32x64xf32>, %b: memref<64x64xf32>, %c: memref<32x64xf32>, %x: f32, %n: index) {
  // expected-error @+1 {{init is the accumulator's start without accumulate: not both}}
  attn.tile_matmul %a, %b into %c extents(%n, %n, %n) init %x {accumulate} : memref<32x64xf32>, memref<64x64xf32>, memref<32x64xf32>
  return
}

// -----

func.func @tile_normalize_folded_softmax(%s: memref<32x64xf32>, %m: memref<32xf32>, %l: memref<32xf32>, %c: memref<32xf32>, %n: index, %k: f32) {
  // expected-error @+1 {{folded needs a normalizer with a folded form, got #attn.softmax}}
  attn.tile_normalize %s rows %n keys %k normalizer(#attn.softmax) state %m, %l : memref<32xf32>, memref<32xf32> correction %c : memref<32xf32> {folded} : memref<32x64xf32>
  return
}

// -----

func.func @tile_normalize_state(%s: memref<32x64xf32>, %m: memref<32xf32>, %c: memref<32xf32>, %n: index, %k: f32) {
  // expected-error @+1 {{normalizer #attn.softmax carries 2 row state values, got 1 state tiles}}
  attn.tile_normalize %s rows %n keys %k normalizer(#attn.softmax) state %m : memref<32xf32> correction %c : memref<32xf32> : memref<32x64xf32>
  return
}

// -----

func.func @tile_normalize_correction(%s: memref<32x64xf32>, %c: memref<32xf32>, %n: index, %k: f32) {
  // expected-error @+1 {{a correction tile goes with a row-wise normalizer, and only with one}}
  attn.tile_normalize %s rows %n keys %k normalizer(#attn.sigmoid) correction %c : memref<32xf32> : memref<32x64xf32>
  return
}

// -----

func.func @tile_load_rank(%v: memref<?x?xf32>, %t: memref<8x8xf32>, %i: index) {
  // expected-error @+1 {{source must be [B, H, S] or [B, H, S, C]}}
  attn.tile_load %v[%i, %i, %i] rows %i into %t : memref<?x?xf32>, memref<8x8xf32>
  return
}

// -----

func.func @tile_mask_negative_window(%s: memref<32x64xf32>, %i: index) {
  // expected-error @+1 {{window must be non-negative, got -3}}
  attn.tile_mask %s at %i, %i lengths %i, %i {window = -3 : i64} : memref<32x64xf32>
  return
}

// -----

func.func @mask_yields_f32(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{mask must yield i1, got 'f32'}}
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %one = arith.constant 1.0 : f32
    attn.yield %one : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @mask_takes_a_score(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{mask must take 4 arguments, got 5}}
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  mask {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    %keep = arith.cmpi sle, %j, %i : index
    attn.yield %keep : i1
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @capture_f16(%q: tensor<1x2x8x16xf32>, %c: tensor<8xf16>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{capture 0 element type must be f32, i32 or i64, got 'f16'}}
  %o = attn.attention %q, %q, %q captures(%c : tensor<8xf16>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @score_mod_without_capture_argument(%q: tensor<1x2x8x16xf32>, %c: tensor<8xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error @+1 {{score_mod must take 6 arguments, got 5}}
  %o = attn.attention %q, %q, %q captures(%c : tensor<8xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index):
    attn.yield %s : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @dim_at_a_negative_index(%q: tensor<1x2x8x16xf32>, %c: tensor<?x?xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q captures(%c : tensor<?x?xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %t: tensor<?x?xf32>):
    %minus_one = arith.constant -1 : index
    // expected-error @+1 {{'tensor.dim' op in score_mod reads dimension -1 of a captured tensor: dimensions count from 0}}
    %width = tensor.dim %t, %minus_one : tensor<?x?xf32>
    %x = tensor.extract %t[%h, %width] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @extract_from_a_region_value(%q: tensor<1x2x8x16xf32>, %c: tensor<8xf32>) -> tensor<1x2x8x16xf32> {
  %o = attn.attention %q, %q, %q captures(%c : tensor<8xf32>) normalizer(#attn.softmax) : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %t: tensor<8xf32>):
    %f = arith.constant dense<1.0> : tensor<8xf32>
    // expected-error @+1 {{'tensor.extract' op in score_mod must read a captured tensor (an argument of the region)}}
    %x = tensor.extract %f[%i] : tensor<8xf32>
    attn.yield %x : f32
  }
  return %o : tensor<1x2x8x16xf32>
}

// -----

func.func @tile_capture_without_fault(%s: memref<32x64xf32>, %i: index, %c: memref<?xf32>) {
  // expected-error @+1 {{reads captures but has no fault memref}}
  attn.tile_score_mod %s rows %i cols %i batch %i head %i at %i, %i captures(%c : memref<?xf32>) {multiplier = 1.0 : f64} : memref<32x64xf32> {
  ^bb0(%x: f32, %b: index, %h: index, %q: index, %k: index, %t: memref<?xf32>):
    attn.yield %x : f32
  }
  return
}

// -----

func.func @split_heads_kv_not_dividing(%y: tensor<2x8x112xf32>) {
  // expected-error @+1 {{heads 3 must be a multiple of kv_heads 2}}
  %q, %k, %v = attn.split_heads %y {heads = 3 : i64, kv_heads = 2 : i64} : tensor<2x8x112xf32> -> tensor<2x3x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  return
}

// -----

func.func @split_heads_input_rank(%y: tensor<16x128xf32>) {
  // expected-error @+1 {{input must have rank 3 [B, S, (Hq + 2 Hkv) D], got rank 2}}
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<16x128xf32> -> tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  return
}

// -----

func.func @split_heads_features_overflow(%y: tensor<2x8x96xf32>) {
  // expected-error @+1 {{(heads 9223372036854775807 + 2 x kv_heads 9223372036854775807) x head dim 16 overflows 64 bits}}
  %q, %k, %v = attn.split_heads %y {heads = 9223372036854775807 : i64, kv_heads = 9223372036854775807 : i64} : tensor<2x8x96xf32> -> tensor<2x9223372036854775807x8x16xf32>, tensor<2x9223372036854775807x8x16xf32>, tensor<2x9223372036854775807x8x16xf32>
  return
}

// -----

func.func @split_heads_features(%y: tensor<2x8x96xf32>) {
  // expected-error @+1 {{input has 96 features, expected (heads 4 + 2 x kv_heads 2) x head dim 16 = 128}}
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<2x8x96xf32> -> tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  return
}

// -----

func.func @split_heads_head_count(%y: tensor<2x8x128xf32>) {
  // expected-error @+1 {{key has 4 heads, expected 2}}
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<2x8x128xf32> -> tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>
  return
}

// -----

func.func @split_heads_length(%y: tensor<2x8x128xf32>) {
  // expected-error @+1 {{value length 9 differs from input length 8}}
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<2x8x128xf32> -> tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x9x16xf32>
  return
}

// -----

func.func @split_heads_head_dim(%y: tensor<2x8x128xf32>) {
  // expected-error @+1 {{key head dim 8 differs from query head dim 16}}
  %q, %k, %v = attn.split_heads %y {heads = 4 : i64, kv_heads = 2 : i64} : tensor<2x8x128xf32> -> tensor<2x4x8x16xf32>, tensor<2x2x8x8xf32>, tensor<2x2x8x16xf32>
  return
}

// -----

func.func @classify_map_element(%n: index, %map: memref<?x?x?x?xi32>) -> index {
  // expected-error @+1 {{map must be an i8 memref, got 'memref<?x?x?x?xi32>'}}
  %kind = attn.tile_mask_classify rows %n cols %n batch %n head %n at %n, %n map %map[%n, %n, %n, %n] : memref<?x?x?x?xi32> : index {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %keep = arith.cmpi sle, %j, %i : index
    attn.yield %keep : i1
  }
  return %kind : index
}

// -----

func.func @classify_map_indices(%n: index, %map: memref<?x?x?x?xi8>) -> index {
  // expected-error @+1 {{map of rank 4 takes as many indices, got 2}}
  %kind = attn.tile_mask_classify rows %n cols %n batch %n head %n at %n, %n map %map[%n, %n] : memref<?x?x?x?xi8> : index {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %keep = arith.cmpi sle, %j, %i : index
    attn.yield %keep : i1
  }
  return %kind : index
}

// -----

// A score tile without key columns (a fuzzer input): the CPU lowering built a 0-wide vector.
func.func @score_tile_without_keys(%s: memref<31x0xf32>, %max: memref<31xf32>, %sum: memref<31xf32>, %corr: memref<31xf32>, %keys: f32, %rows: index) {
  // expected-error @+1 {{scores must have at least one row and one key column, got 'memref<31x0xf32>'}}
  attn.tile_normalize %s rows %rows keys %keys normalizer(#attn.softmax) state %max, %sum : memref<31xf32>, memref<31xf32> correction %corr : memref<31xf32> : memref<31x0xf32>
  return
}

// -----

func.func @mask_tile_without_rows(%s: memref<0x64xf32>, %n: index) {
  // expected-error @+1 {{scores must have at least one row and one key column, got 'memref<0x64xf32>'}}
  attn.tile_mask %s at %n, %n lengths %n, %n {causal} : memref<0x64xf32>
  return
}
