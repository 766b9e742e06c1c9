// An explicit bias operand (attn-legalize makes it a captured tensor read by the score_mod).
func.func @biased(%q: tensor<1x2x8x64xf32>, %k: tensor<1x2x8x64xf32>, %v: tensor<1x2x8x64xf32>, %b: tensor<1x2x8x8xf32>) -> tensor<1x2x8x64xf32> {
  %o = attn.attention %q, %k, %v bias(%b : tensor<1x2x8x8xf32>) normalizer(#attn.softmax)
      : tensor<1x2x8x64xf32>, tensor<1x2x8x64xf32>, tensor<1x2x8x64xf32> -> tensor<1x2x8x64xf32>
  return %o : tensor<1x2x8x64xf32>
}
