// Captured tensors: score_mod and mask regions that read tensors the call passes (after q, k, v,
// in the function's argument order: attn.attention(q, k, v, variant, captures=[...])). Each
// region takes one more argument per capture and reads it with tensor.extract at indices it
// computes from b, h, q and k; a read outside a capture is an error at run time. Sizes written
// as ? take any; a size written in the IR is checked at every call.

// Documents of any lengths packed into each sequence: a query sees the keys of its own
// document. %docs [B, S] holds a document id per token (different per batch entry); the kernels
// skip the key blocks that hold no key of a query tile's documents.
func.func @document_ids(%q: tensor<?x8x?x64xf32>, %k: tensor<?x8x?x64xf32>,
                        %v: tensor<?x8x?x64xf32>, %docs: tensor<?x?xi32>) -> tensor<?x8x?x64xf32> {
  %o = attn.attention %q, %k, %v captures(%docs : tensor<?x?xi32>) normalizer(#attn.softmax)
      : tensor<?x8x?x64xf32>, tensor<?x8x?x64xf32>, tensor<?x8x?x64xf32> -> tensor<?x8x?x64xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>):
    %di = tensor.extract %d[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %d[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  return %o : tensor<?x8x?x64xf32>
}

// A relative-position bias table (T5, Swin): s + table[h, q - k + 1023]. %table [H, 2047]
// covers distances up to 1023 (sequences up to 1024 tokens); its width goes with the constant,
// so it is written in the type and checked at every call.
func.func @relative_position_bias(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>,
                                  %v: tensor<?x?x?x64xf32>, %table: tensor<?x2047xf32>)
    -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v captures(%table : tensor<?x2047xf32>) normalizer(#attn.softmax)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %t: tensor<?x2047xf32>):
    %reach = arith.constant 1023 : index
    %distance = arith.subi %i, %j : index
    %index = arith.addi %distance, %reach : index
    %bias = tensor.extract %t[%h, %index] : tensor<?x2047xf32>
    %r = arith.addf %s, %bias : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x64xf32>
}

// ALiBi with per-head slopes the model passes (fixed 2^(-8h/H), or learned): s - slopes[h] * (q - k)
// on causal sigmoid attention. %slopes [H].
func.func @alibi_slopes(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>,
                        %v: tensor<?x?x?x64xf32>, %slopes: tensor<?xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v captures(%slopes : tensor<?xf32>) normalizer(#attn.sigmoid)
      {causal} : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %m: tensor<?xf32>):
    %slope = tensor.extract %m[%h] : tensor<?xf32>
    %distance = arith.subi %i, %j : index
    %di = arith.index_cast %distance : index to i64
    %df = arith.sitofp %di : i64 to f32
    %penalty = arith.mulf %slope, %df : f32
    %r = arith.subf %s, %penalty : f32
    attn.yield %r : f32
  }
  return %o : tensor<?x?x?x64xf32>
}
