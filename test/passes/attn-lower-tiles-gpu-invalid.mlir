// RUN: attn-opt %s --split-input-file --attn-legalize --attn-tile="query-tile=64 key-tile=24" --attn-lower-tiles-gpu --verify-diagnostics
// RUN: attn-opt %S/Inputs/sigmoid-64.mlir --attn-legalize --attn-tile="query-tile=64 key-tile=64 fold-normalizer=true" --attn-lower-tiles-gpu --verify-diagnostics

// Tiles the fragments cannot hold are a diagnostic on the op's location, not a crash.
func.func @rows_not_whole_warps(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  // expected-error @+1 {{GPU lowering: register tiles need 16 rows per warp and columns in multiples of 16, got 64x24}}
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}
