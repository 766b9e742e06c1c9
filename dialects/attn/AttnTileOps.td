#ifndef ATTN_TILE_OPS_TD
#define ATTN_TILE_OPS_TD

// The tile-level flash algorithm. `attn-tile` and `attn-derive-backward` express each kernel
// once, target independent, as a loop over key (or query) blocks whose body is these ops on
// small static tiles (memrefs the kernel allocates); a target lowers each op
// (`attn-lower-tiles-cpu`: register-blocked vector FMAs).
//
// Tiles are f32 and static. A block at the end of a sequence is zero-padded by tile_load
// and its padding keys are masked by tile_mask; compute ops work on whole tiles, up to the valid
// extents they are given (a short sequence computes only its rows).

class Attn_TileOp<string mnemonic, list<Trait> traits = []> : Attn_Op<mnemonic, traits>;

def Attn_TileFillOp : Attn_TileOp<"tile_fill"> {
  let summary = "sets every element of a tile to a constant";
  let arguments = (ins Arg<AnyMemRef, "", [MemWrite]>:$tile, F32Attr:$value);
  let assemblyFormat = "$tile `with` $value attr-dict `:` type($tile)";
  let hasVerifier = 1;
}

def Attn_TileLoadOp : Attn_TileOp<"tile_load"> {
  let summary = "copies rows [start, start + count) of a (batch, head) slice into a tile";
  let description = [{
    Rank 4 source `[B, H, S, C]` into a `TxC` tile (`CxT` with `transpose`), rank 3 source
    `[B, H, S]` into a `T` tile. Rows at and past `count` are zero. `multiplier` scales every
    value on the way in.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$source, Index:$batch, Index:$head,
                       Index:$start, Index:$count, Arg<AnyMemRef, "", [MemWrite]>:$tile,
                       UnitAttr:$transpose, OptionalAttr<F32Attr>:$multiplier);
  let assemblyFormat = [{
    $source `[` $batch `,` $head `,` $start `]` `rows` $count `into` $tile attr-dict
    `:` type($source) `,` type($tile)
  }];
  let hasVerifier = 1;
}

def Attn_TileStoreOp : Attn_TileOp<"tile_store"> {
  let summary = "stores the first `count` rows of a tile into a (batch, head) slice";
  let description = [{
    dest[b, h, start + r, c] = tile[r, c] * row_scale[r] * multiplier for r < count (rank 2
    tile into a rank 4 destination, rank 1 into rank 3).
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$tile, Index:$count,
                       Arg<AnyMemRef, "", [MemWrite]>:$dest, Index:$batch, Index:$head,
                       Index:$start, Optional<AnyMemRef>:$row_scale,
                       OptionalAttr<F32Attr>:$multiplier);
  let assemblyFormat = [{
    $tile `rows` $count `into` $dest `[` $batch `,` $head `,` $start `]`
    (`row_scale` $row_scale^ `:` type($row_scale))? attr-dict `:` type($tile) `,` type($dest)
  }];
  let hasVerifier = 1;
}

def Attn_TileMatmulOp : Attn_TileOp<"tile_matmul", [AttrSizedOperandSegments]> {
  let summary = "acc = acc * row_scale (or init, or 0) + alpha * op(lhs) * rhs on whole tiles";
  let description = [{
    lhs `MxK` (`KxM` with `transpose_lhs`), rhs `KxN`, acc `MxN`. Without `accumulate` the
    accumulator's old value is ignored and every element starts at `init` (an f32, 0 when
    absent: a normalizer's folded score offset); with it, each row i of it is first multiplied by
    `row_scale[i]` when given (the online normalizer's correction).
    `extents (rows, depth, cols)` are the valid sizes (a partial tile at the end of a
    sequence): only acc rows < rows are computed, the reduction stops at depth (what lies past
    it is zero padding), and column blocks starting at or past cols may be skipped (their acc
    values are then unspecified). A short sequence does not pay for a full tile.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$lhs, Arg<AnyMemRef, "", [MemRead]>:$rhs,
                       Arg<AnyMemRef, "", [MemRead, MemWrite]>:$acc, Index:$rows,
                       Index:$depth, Index:$cols,
                       Optional<AnyMemRef>:$row_scale, Optional<F32>:$init,
                       UnitAttr:$transpose_lhs, UnitAttr:$accumulate,
                       OptionalAttr<F32Attr>:$alpha);
  let assemblyFormat = [{
    $lhs `,` $rhs `into` $acc `extents` `(` $rows `,` $depth `,` $cols `)`
    (`row_scale` $row_scale^ `:` type($row_scale))? (`init` $init^)? attr-dict
    `:` type($lhs) `,` type($rhs) `,` type($acc)
  }];
  let hasVerifier = 1;
}

def Attn_TileMaskOp : Attn_TileOp<"tile_mask"> {
  let summary = "sets the scores of keys a row may not see to -inf (boundary blocks only)";
  let description = [{
    scores[i, j] = -inf (or `fill`) where query row_start + i >= query_length (padding rows),
    key col_start + j >= key_length (padding keys), or the causal / window mask forbids the key
    to the row. `fill` = 0 masks probabilities, after a folded tile_normalize.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead, MemWrite]>:$scores, Index:$row_start,
                       Index:$col_start, Index:$query_length, Index:$key_length,
                       UnitAttr:$causal, OptionalAttr<I64Attr>:$window,
                       OptionalAttr<F32Attr>:$fill);
  let assemblyFormat = [{
    $scores `at` $row_start `,` $col_start `lengths` $query_length `,` $key_length
    attr-dict `:` type($scores)
  }];
  let hasVerifier = 1;
}

def Attn_TileMaskClassifyOp : Attn_TileOp<"tile_mask_classify", [AttrSizedOperandSegments]> {
  let summary = "classifies a block of scores by the mask region: empty, full or partial";
  let description = [{
    Evaluates `mask(batch, head, row_start + i, col_start + j, captures...)` for the block's
    valid rows i < rows and keys j < cols and returns 0 when it is false everywhere (the block
    can be skipped), 1 when it is true everywhere (no element needs the region), 2 otherwise. An
    empty extent gives 0.

    `captures` are the attention op's captured tensors as memrefs; the region reads them with
    `memref.load`. A read out of bounds sets `fault[c]` (c: the capture's position) to 1 and
    reads element 0 instead, so the run time can report it.

    With a block `map` (i8, one entry per block of a kernel's grid, `map_indices` its
    indices), the classification is shared between kernels and calls: an entry of 0, 1 or 2
    is the block's kind, read instead of evaluating the region; any other entry (the run time
    fills a new map with 3) is classified by the region and written there. Indices outside
    the map classify without it. Writers of one entry agree (the region is a function of the
    indices and captures), so concurrent tiles may fill a map.
  }];
  let arguments = (ins Index:$rows, Index:$cols, Index:$batch, Index:$head, Index:$row_start,
                       Index:$col_start, Variadic<AnyMemRef>:$captures,
                       Optional<AnyMemRef>:$fault,
                       Arg<Optional<AnyMemRef>, "", [MemRead, MemWrite]>:$map,
                       Variadic<Index>:$map_indices);
  let results = (outs Index:$kind);
  let regions = (region SizedRegion<1>:$mask);
  let assemblyFormat = [{
    `rows` $rows `cols` $cols `batch` $batch `head` $head `at` $row_start `,` $col_start
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    (`fault` $fault^ `:` type($fault))?
    (`map` $map^ `[` $map_indices `]` `:` type($map))? attr-dict `:` type($kind) $mask
  }];
  let hasVerifier = 1;
}

def Attn_TileMaskRegionOp : Attn_TileOp<"tile_mask_region", [AttrSizedOperandSegments]> {
  let summary = "sets the scores the mask region forbids to -inf (partial blocks only)";
  let description = [{
    scores[i, j] = -inf where !mask(batch, head, row_start + i, col_start + j, captures...),
    for rows i < rows. Keys j >= cols (padding) are evaluated at the last valid key: their
    scores are masked anyway, and the region never sees a key index past the sequence.
    `captures` and `fault` as in tile_mask_classify.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead, MemWrite]>:$scores, Index:$rows,
                       Index:$cols, Index:$batch, Index:$head, Index:$row_start,
                       Index:$col_start, Variadic<AnyMemRef>:$captures,
                       Optional<AnyMemRef>:$fault);
  let regions = (region SizedRegion<1>:$mask);
  let assemblyFormat = [{
    $scores `rows` $rows `cols` $cols `batch` $batch `head` $head `at` $row_start `,` $col_start
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    (`fault` $fault^ `:` type($fault))? attr-dict `:` type($scores) $mask
  }];
  let hasVerifier = 1;
}

def Attn_TileScoreModOp : Attn_TileOp<"tile_score_mod", [AttrSizedOperandSegments]> {
  let summary = "applies the score_mod region to every score of a tile";
  let description = [{
    scores[i, j] = multiplier * mod(scores[i, j], batch, head, row_start + i, col_start + j,
    captures...); with `derivative`, also derivative[i, j] = d mod / d s there (in natural
    units). Keys j >= cols (padding) are evaluated at the last valid key (their scores are
    masked later). `captures` and `fault` as in tile_mask_classify.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead, MemWrite]>:$scores, Index:$rows,
                       Index:$cols, Index:$batch, Index:$head, Index:$row_start,
                       Index:$col_start, Optional<AnyMemRef>:$derivative,
                       Variadic<AnyMemRef>:$captures, Optional<AnyMemRef>:$fault,
                       F64Attr:$multiplier);
  let regions = (region SizedRegion<1>:$score_mod);
  let assemblyFormat = [{
    $scores `rows` $rows `cols` $cols `batch` $batch `head` $head `at` $row_start `,` $col_start
    (`derivative` $derivative^ `:` type($derivative))?
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    (`fault` $fault^ `:` type($fault))? attr-dict `:` type($scores) $score_mod
  }];
  let hasVerifier = 1;
}

def Attn_TileCopyOp : Attn_TileOp<"tile_copy"> {
  let summary = "copies a score tile into another of the same shape";
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$source,
                       Arg<AnyMemRef, "", [MemWrite]>:$dest);
  let assemblyFormat = "$source `into` $dest attr-dict `:` type($source) `,` type($dest)";
  let hasVerifier = 1;
}

def Attn_TileCaptureGradientOp : Attn_TileOp<"tile_capture_gradient",
    [AttrSizedOperandSegments]> {
  let summary = "gradients of the captured tensors a score_mod reads, and dS from dS'";
  let description = [{
    For the valid rows i < rows and keys j < cols, with G = grads[i, j] the gradient with
    respect to the score_mod's result and s = raw[i, j] its score argument:
    gradients[c][idx] += G * d mod / d x for every read x = captures[c][idx] of an f32
    capture by the region (the partial derivative in that read), then grads[i, j] =
    G * d mod / d s (the gradient with respect to the raw score). `gradients` holds one memref
    per f32 capture, in capture order, of the capture's shape; the kernel accumulates into
    them (the run time gives each thread its own and sums them). Where G = 0 (masked scores)
    nothing is added. Reads are bounds-checked as in tile_score_mod.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$raw,
                       Arg<AnyMemRef, "", [MemRead, MemWrite]>:$grads, Index:$rows,
                       Index:$cols, Index:$batch, Index:$head, Index:$row_start,
                       Index:$col_start, Variadic<AnyMemRef>:$captures, AnyMemRef:$fault,
                       Variadic<AnyMemRef>:$gradients);
  let regions = (region SizedRegion<1>:$score_mod);
  let assemblyFormat = [{
    $raw `,` $grads `rows` $rows `cols` $cols `batch` $batch `head` $head `at` $row_start `,`
    $col_start `captures` `(` $captures `:` type($captures) `)` `fault` $fault `:` type($fault)
    `gradients` `(` $gradients `:` type($gradients) `)` attr-dict `:` type($raw) `,`
    type($grads) $score_mod
  }];
  let hasVerifier = 1;
}

def Attn_TileRowInitOp : Attn_TileOp<"tile_row_init"> {
  let summary = "fills a row-wise normalizer's state tiles with its initial state";
  let arguments = (ins Variadic<AnyMemRef>:$state, Attn_NormalizerAttrInterface:$normalizer);
  let assemblyFormat = "`normalizer` `(` $normalizer `)` (`state` $state^ `:` type($state))? attr-dict";
  let hasVerifier = 1;
}

def Attn_TileNormalizeOp : Attn_TileOp<"tile_normalize", [AttrSizedOperandSegments]> {
  let summary = "scores to probabilities over a tile, updating the row state";
  let description = [{
    In place, on rows < rows (the valid ones). Elementwise normalizers: p = f(s). Row-wise ones run steps 1-4 of
    NormalizerAttrInterface per row (block max, shift, p, block sum) and write each row's
    accumulator correction to `correction`. p = 0 wherever s = -inf (masked). `key_length`
    is the run-time key length (f32). With `folded` the tile holds u = a s + c of the
    normalizer's getFoldedScoreFactor (a in the queries, c the score product's init), p =
    emitFoldedProbability(u), no u is +inf and masks come after, as `fill` = 0.
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead, MemWrite]>:$scores, Index:$rows,
                       Variadic<AnyMemRef>:$state, Optional<AnyMemRef>:$correction,
                       F32:$key_length, Attn_NormalizerAttrInterface:$normalizer,
                       UnitAttr:$folded);
  let regions = (region MaxSizedRegion<1>:$normalizer_body);
  let assemblyFormat = [{
    $scores `rows` $rows `keys` $key_length `normalizer` `(` $normalizer `)`
    (`state` $state^ `:` type($state))? (`correction` $correction^ `:` type($correction))?
    attr-dict `:` type($scores) (`normalizer_body` $normalizer_body^)?
  }];
  let hasVerifier = 1;
}

def Attn_TileRowFinalizeOp : Attn_TileOp<"tile_row_finalize"> {
  let summary = "a row-wise normalizer's output factor and log-sum-exp per row";
  let arguments = (ins Variadic<AnyMemRef>:$state, Arg<AnyMemRef, "", [MemWrite]>:$factor,
                       Arg<AnyMemRef, "", [MemWrite]>:$lse,
                       Attn_NormalizerAttrInterface:$normalizer);
  let assemblyFormat = [{
    `normalizer` `(` $normalizer `)` `state` $state `:` type($state) `into` $factor `,` $lse
    attr-dict `:` type($factor) `,` type($lse)
  }];
  let hasVerifier = 1;
}

def Attn_TileProbabilitiesOp : Attn_TileOp<"tile_probabilities"> {
  let summary = "the backward's normalized probabilities from scores (and each row's lse)";
  let description = [{ probs = NormalizerAttrInterface::emitBackwardProbability; 0 where s = -inf. }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$scores, Index:$rows,
                       Optional<AnyMemRef>:$lse,
                       F32:$key_length, Arg<AnyMemRef, "", [MemWrite]>:$probs,
                       Attn_NormalizerAttrInterface:$normalizer);
  let regions = (region MaxSizedRegion<1>:$normalizer_body);
  let assemblyFormat = [{
    $scores `rows` $rows (`lse` $lse^ `:` type($lse))? `keys` $key_length `into` $probs
    `normalizer` `(` $normalizer `)` attr-dict `:` type($scores) `,` type($probs)
    (`normalizer_body` $normalizer_body^)?
  }];
  let hasVerifier = 1;
}

def Attn_TileScoreGradientOp : Attn_TileOp<"tile_score_gradient",
    [AttrSizedOperandSegments, AllTypesMatch<["scores", "probs", "grads"]>]> {
  let summary = "dS from s, p and dP over a tile, in place of dP";
  let description = [{
    grads[i, j] = normalizer dS(s, p, dP = grads[i, j], row_term[i]) * derivative[i, j]
    (the score_mod's derivative, when given); 0 where s = -inf (masked).
  }];
  let arguments = (ins Arg<AnyMemRef, "", [MemRead]>:$scores, Arg<AnyMemRef, "", [MemRead]>:$probs,
                       Arg<AnyMemRef, "", [MemRead, MemWrite]>:$grads, Index:$rows,
                       Optional<AnyMemRef>:$row_term, Optional<AnyMemRef>:$derivative,
                       F32:$key_length, Attn_NormalizerAttrInterface:$normalizer);
  let regions = (region MaxSizedRegion<1>:$normalizer_body);
  let assemblyFormat = [{
    $scores `,` $probs `,` $grads `rows` $rows (`row_term` $row_term^ `:` type($row_term))?
    (`derivative` $derivative^ `:` type($derivative))? `keys` $key_length
    `normalizer` `(` $normalizer `)` attr-dict `:` type($scores)
    (`normalizer_body` $normalizer_body^)?
  }];
  let hasVerifier = 1;
}

#endif // ATTN_TILE_OPS_TD
