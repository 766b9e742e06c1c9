// attn-tile's fold-normalizer is CPU only: the GPU lowering refuses its tile ops with a
// diagnostic (attn-lower-tiles-gpu-invalid.mlir).
func.func @folded(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  // expected-error @+1 {{GPU lowering: a product with init (attn-tile's fold-normalizer is CPU only)}}
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}
