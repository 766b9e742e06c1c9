// attn.split_heads's verifier (dialects/attn/AttnOps.cpp): (heads + 2 kv_heads) x head dim
// overflowed int64 for heads = kv_heads = 9223372036854775807 (UBSan: signed integer overflow).
// Found by test/fuzz/AttnPipelineFuzzer.cpp in the CI rehearsal of 2026-12-02; fixed by an
// overflow-checked product that is a diagnostic (lit test in test/dialects/attn/invalid.mlir).
// Kept as a seed of scripts/fuzz.sh.
func.func @f(%y: tensor<2x8x96xf32>) {
  %q, %k, %v = attn.split_heads %y {heads = 9223372036854775807 : i64, kv_heads = 9223372036854775807 : i64} : tensor<2x8x96xf32> -> tensor<2x9223372036854775807x8x16xf32>, tensor<2x9223372036854775807x8x16xf32>, tensor<2x9223372036854775807x8x16xf32>
  return
}
