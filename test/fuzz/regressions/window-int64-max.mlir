// attn-tile (KernelEmitter::keyRangeForRow, passes/KernelEmitter.cpp): `*window + 1` overflowed
// int64 for window = 9223372036854775807 without `causal` (UBSan: signed integer overflow).
// Found by test/fuzz/AttnPipelineFuzzer.cpp; fixed by clamping windows to 2^30 keys (lit test in
// test/passes/attn-tile.mlir). Kept as a seed of scripts/fuzz.sh.
func.func @f(%q: tensor<1x1x?x16xf32>) -> tensor<1x1x?x16xf32> {
  %o = attn.attention %q, %q, %q normalizer(#attn.softmax) {window = 9223372036854775807}
      : tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32>, tensor<1x1x?x16xf32> -> tensor<1x1x?x16xf32>
  return %o : tensor<1x1x?x16xf32>
}
