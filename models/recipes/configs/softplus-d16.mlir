// A user-written normalizer for attn-train's --attention=FILE: p = softplus(s) / 16 (an
// elementwise, sigmoid-like weight that never vanishes). Head dim 16 (e.g. --embed-dim=64
// --heads=4); batch, heads and lengths stay dynamic, so one kernel serves every batch.
func.func @softplus_attention(%q: tensor<?x?x?x16xf32>, %k: tensor<?x?x?x16xf32>,
                              %v: tensor<?x?x?x16xf32>) -> tensor<?x?x?x16xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %one = arith.constant 1.0 : f32
    %scale = arith.constant 0.0625 : f32
    %e = math.exp %s : f32
    %e1 = arith.addf %e, %one : f32
    %l = math.log %e1 : f32
    %p = arith.mulf %l, %scale : f32
    attn.yield %p : f32
  }
  return %o : tensor<?x?x?x16xf32>
}
