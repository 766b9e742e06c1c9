// Sigmoid attention (FlashSigmoid): the bias defaults to -ln(Sk), computed from the run-time
// key length. The static sizes written here are an example; the variant runs at any size.
func.func @sigmoid_default_bias(%q: tensor<4x16x1024x128xf16>, %k: tensor<4x16x1024x128xf16>,
                                %v: tensor<4x16x1024x128xf16>) -> tensor<4x16x1024x128xf16> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid)
      : tensor<4x16x1024x128xf16>, tensor<4x16x1024x128xf16>, tensor<4x16x1024x128xf16> -> tensor<4x16x1024x128xf16>
  return %o : tensor<4x16x1024x128xf16>
}

// An explicit bias and scale, with a per-batch key-padding mask.
func.func @sigmoid_explicit(%q: tensor<?x4x?x64xf32>, %k: tensor<?x4x?x64xf32>,
                            %v: tensor<?x4x?x64xf32>, %lengths: tensor<?xi32>) -> tensor<?x4x?x64xf32> {
  %o = attn.attention %q, %k, %v kv_lengths(%lengths : tensor<?xi32>)
      normalizer(#attn.sigmoid<bias = -3.5>) {scale = 0.125 : f32}
      : tensor<?x4x?x64xf32>, tensor<?x4x?x64xf32>, tensor<?x4x?x64xf32> -> tensor<?x4x?x64xf32>
  return %o : tensor<?x4x?x64xf32>
}
