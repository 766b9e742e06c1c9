// A user-written elementwise normalizer: p = 0.5 * (1 + tanh(s)) * exp(-0.1 * s * s), an
// attenuated sigmoid. Its derivative is derived symbolically by attn-derive-backward.
func.func @custom_normalizer(%q: tensor<1x4x?x64xf32>, %k: tensor<1x4x?x64xf32>,
                             %v: tensor<1x4x?x32xf32>) -> tensor<1x4x?x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom)
      : tensor<1x4x?x64xf32>, tensor<1x4x?x64xf32>, tensor<1x4x?x32xf32> -> tensor<1x4x?x32xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %half = arith.constant 0.5 : f32
    %one = arith.constant 1.0 : f32
    %decay = arith.constant -0.1 : f32
    %t = math.tanh %s : f32
    %t1 = arith.addf %t, %one : f32
    %sig = arith.mulf %t1, %half : f32
    %s2 = arith.mulf %s, %s : f32
    %e = arith.mulf %s2, %decay : f32
    %g = math.exp %e : f32
    %p = arith.mulf %sig, %g : f32
    attn.yield %p : f32
  }
  return %o : tensor<1x4x?x32xf32>
}
