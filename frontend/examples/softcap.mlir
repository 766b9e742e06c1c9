// Logit soft-capping (Gemma 2): s -> 30 * tanh(s / 30), with an additive bias broadcast over
// the batch and the heads.
func.func @softcap_bias(%q: tensor<2x4x128x64xf32>, %k: tensor<2x4x256x64xf32>,
                        %v: tensor<2x4x256x64xf32>, %bias: tensor<1x1x128x256xf32>) -> tensor<2x4x128x64xf32> {
  %o = attn.attention %q, %k, %v bias(%bias : tensor<1x1x128x256xf32>) normalizer(#attn.softmax)
      : tensor<2x4x128x64xf32>, tensor<2x4x256x64xf32>, tensor<2x4x256x64xf32> -> tensor<2x4x128x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index):
    %cap = arith.constant 30.0 : f32
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %r = arith.mulf %t, %cap : f32
    attn.yield %r : f32
  }
  return %o : tensor<2x4x128x64xf32>
}
