#ifndef ATTN_OPS_TD
#define ATTN_OPS_TD

include "mlir/IR/OpBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "dialects/attn/AttnAttrs.td"

class Attn_Op<string mnemonic, list<Trait> traits = []> : Op<Attn_Dialect, mnemonic, traits>;

def Attn_AttentionOp : Attn_Op<"attention", [Pure, AttrSizedOperandSegments, IsolatedFromAbove]> {
  let summary = "scaled dot-product attention with a pluggable normalizer";
  let description = [{
    q `[B, Hq, Sq, D]`, k `[B, Hkv, Sk, D]`, v `[B, Hkv, Sk, Dv]` -> `[B, Hq, Sq, Dv]`, with
    Hq % Hkv == 0 (query head h reads key/value head h / (Hq / Hkv)). B, H and S may be
    dynamic; D and Dv are static.

    s = scale * q k^T (scale defaults to 1/sqrt(D)), then `score_mod` (if present), then the
    additive `bias` (`[B|1, Hq|1, Sq, Sk]`), then the masks: `causal` masks j > i (top-left
    aligned, as torch SDPA's is_causal), `window = W` masks j < i - W (and j > i + W when not
    causal), `kv_lengths` (`[B]`) masks j >= kv_lengths[b]. The normalizer maps the allowed
    scores to p; masked entries have p = 0; a row with no allowed key yields 0.

    `score_mod`: `^bb0(%s: f32, %b: index, %h: index, %q: index, %k: index)` yielding one f32.
    `mask`: `^bb0(%b: index, %h: index, %q: index, %k: index)` yielding one i1, true where query
    q may see key k (a document mask, prefix-LM, a dilated or 2-D neighbourhood pattern); it is
    applied with the other masks, and the tiled kernels skip the key blocks it empties.
    `normalizer_body` (only with `#attn.custom`): `^bb0(%s: f32)` yielding one f32.
    Both regions hold arith and math ops only, plus `tensor.extract` and `tensor.dim` of
    captured tensors.

    `captures`: extra tensors (f32, i32 or i64, any rank, sizes may be dynamic) that the
    score_mod and mask regions read: each region takes one more argument per capture, after its
    index arguments, of the capture's type, and reads it with `tensor.extract` at indices it
    computes from b, h, q and k (a document id per token, a relative-position bias table,
    per-head slopes). A read outside a capture's bounds is an error at run time, not a clamp.
  }];
  let arguments = (ins
    AnyRankedTensor:$query,
    AnyRankedTensor:$key,
    AnyRankedTensor:$value,
    Optional<AnyRankedTensor>:$bias,
    Optional<AnyRankedTensor>:$kv_lengths,
    Variadic<AnyRankedTensor>:$captures,
    Attn_NormalizerAttrInterface:$normalizer,
    OptionalAttr<F32Attr>:$scale,
    UnitAttr:$causal,
    OptionalAttr<I64Attr>:$window
  );
  let results = (outs AnyRankedTensor:$result);
  let regions = (region MaxSizedRegion<1>:$normalizer_body, MaxSizedRegion<1>:$score_mod,
                        MaxSizedRegion<1>:$mask);
  let assemblyFormat = [{
    $query `,` $key `,` $value
    (`bias` `(` $bias^ `:` type($bias) `)`)?
    (`kv_lengths` `(` $kv_lengths^ `:` type($kv_lengths) `)`)?
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    `normalizer` `(` $normalizer `)`
    attr-dict `:` type($query) `,` type($key) `,` type($value) `->` type($result)
    (`normalizer_body` $normalizer_body^)?
    (`score_mod` $score_mod^)?
    (`mask` $mask^)?
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    /// The scale actually applied: the attribute, or 1/sqrt(D) when it is absent.
    float getEffectiveScale();
    /// The region argument types of the score_mod (with_score = true) and mask regions: the
    /// score (score_mod only), b, h, q, k, then one argument per capture.
    ::llvm::SmallVector<::mlir::Type> getRegionArgumentTypes(bool withScore);
    int64_t getHeadDim();
    int64_t getValueHeadDim();
  }];
}

def Attn_ReparamLinearOp : Attn_Op<"reparam_linear", [Pure]> {
  let summary = "sigma-reparameterized linear layer";
  let description = [{
    y = x (gamma / sigma(W) * W)^T + b, with sigma from one power-iteration step on the
    persistent right-singular-vector estimate u (`[In]`): v = normalize(W u),
    u' = normalize(W^T v), sigma = v^T W u' (as apple/ml-sigma-reparam). Returns y `[..., Out]`
    and u'. Without `training` sigma is computed the same way but u is returned unchanged.
    W is `[Out, In]`, the optional bias `[Out]`, gamma a scalar (`tensor<f32>` or `[1]`).
  }];
  let arguments = (ins
    AnyRankedTensor:$input,
    AnyRankedTensor:$weight,
    Optional<AnyRankedTensor>:$bias,
    AnyRankedTensor:$gamma,
    AnyRankedTensor:$u,
    UnitAttr:$training
  );
  let results = (outs AnyRankedTensor:$result, AnyRankedTensor:$updated_u);
  let assemblyFormat = [{
    $input `,` $weight (`bias` `(` $bias^ `:` type($bias) `)`)?
    `gamma` `(` $gamma `:` type($gamma) `)` `u` `(` $u `:` type($u) `)`
    attr-dict `:` type($input) `,` type($weight) `->` type($result) `,` type($updated_u)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def Attn_SplitHeadsOp : Attn_Op<"split_heads", [Pure]> {
  let summary = "a fused QKV projection's output seen as q, k and v heads (a view)";
  let description = [{
    input `[B, S, (Hq + 2 Hkv) D]` (a fused QKV projection's output: the Hq query heads, then
    the Hkv key heads, then the Hkv value heads, each D wide) -> q `[B, Hq, S, D]`,
    k `[B, Hkv, S, D]`, v `[B, Hkv, S, D]` with q[b, h, s, d] = input[b, s, h D + d],
    k[b, h, s, d] = input[b, s, (Hq + h) D + d], v[b, h, s, d] = input[b, s, (Hq + Hkv + h) D + d].
    `heads` = Hq, `kv_heads` = Hkv (Hq % Hkv == 0). A reinterpretation of the layout: it lowers
    to strided views of the input's buffer (memref.expand_shape, subview, transpose), never a
    copy, and D must be static.
  }];
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$heads, I64Attr:$kv_heads);
  let results = (outs AnyRankedTensor:$query, AnyRankedTensor:$key, AnyRankedTensor:$value);
  let assemblyFormat = [{
    $input attr-dict `:` type($input) `->` type($query) `,` type($key) `,` type($value)
  }];
  let hasVerifier = 1;
}

include "dialects/attn/AttnTileOps.td"

def Attn_YieldOp : Attn_Op<"yield", [Pure, Terminator, ReturnLike,
    ParentOneOf<["AttentionOp", "TileScoreModOp", "TileNormalizeOp", "TileProbabilitiesOp",
                 "TileScoreGradientOp", "TileMaskClassifyOp", "TileMaskRegionOp",
                 "TileCaptureGradientOp"]>]> {
  let summary = "yields the value of a scalar region (score_mod, normalizer_body)";
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "attr-dict ($values^ `:` type($values))?";
}

#endif // ATTN_OPS_TD
