// Mismatched head dims between q and k: the verifier rejects the op.
func.func @bad(%q: tensor<1x2x8x64xf32>, %k: tensor<1x2x8x32xf32>, %v: tensor<1x2x8x64xf32>) -> tensor<1x2x8x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax)
      : tensor<1x2x8x64xf32>, tensor<1x2x8x32xf32>, tensor<1x2x8x64xf32> -> tensor<1x2x8x64xf32>
  return %o : tensor<1x2x8x64xf32>
}
