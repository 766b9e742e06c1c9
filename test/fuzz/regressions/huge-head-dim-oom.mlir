// attn-lower-tiles-cpu: head dim 2^31 made the CPU lowering build vectors and unrolled loops
// per element of a row until the fuzzer ran out of memory (4 GiB). Found by
// test/fuzz/AttnPipelineFuzzer.cpp once the CPU lowering joined its pipeline; fixed by a head
// dim limit of 1024 in the tiled kernels (KernelEmitter::checkLowerable, lit test in
// attn-tile.mlir) and a tile size limit in the lowering.
func.func @wigmoid(%q: tensor<?x?x?x2147483648xf16>, %k: tensor<?x?x?x2147483648xf16>, %v: tensor<?x?x?x2147483648xf16>) -> tensor<?x?x?x2147483648xf16> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid<bias = 127>)
      : tensor<?x?x?x2147483648xf16>, tensor<?x?x?x2147483648xf16>, tensor<?x?x?x2147483648xf16> -> tensor<?x?x?x2147483648xf16>
  return %o : tensor<?x?x?x2147483648xf16>
}
