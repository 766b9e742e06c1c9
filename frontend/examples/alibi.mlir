// ALiBi through score_mod: s - slope(h) * (q - k), with slope(h) = 2^(-8 (h + 1) / H) for
// H = 8 heads, on causal softmax attention.
func.func @alibi(%q: tensor<?x8x?x64xf16>, %k: tensor<?x8x?x64xf16>,
                 %v: tensor<?x8x?x64xf16>) -> tensor<?x8x?x64xf16> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal}
      : tensor<?x8x?x64xf16>, tensor<?x8x?x64xf16>, tensor<?x8x?x64xf16> -> tensor<?x8x?x64xf16>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index):
    %one = arith.constant 1 : index
    %minus_one_eighth = arith.constant -1.0 : f32
    %h1 = arith.addi %h, %one : index
    %h1i = arith.index_cast %h1 : index to i32
    %h1f = arith.sitofp %h1i : i32 to f32
    %exponent = arith.mulf %h1f, %minus_one_eighth : f32
    %slope = math.exp2 %exponent : f32
    %dist = arith.subi %qi, %ki : index
    %disti = arith.index_cast %dist : index to i32
    %distf = arith.sitofp %disti : i32 to f32
    %penalty = arith.mulf %slope, %distf : f32
    %r = arith.subf %s, %penalty : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x8x?x64xf16>
}
