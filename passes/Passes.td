#ifndef ATTN_PASSES_TD
#define ATTN_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnLegalize : Pass<"attn-legalize"> {
  let summary = "Make every default of attn.attention explicit";
  let description = [{
    Fills `scale` with 1/sqrt(D) when absent and resolves normalizer parameters that default
    to a function of the key length (sigmoid bias = -ln(Sk), relu scale = 1/Sk) when Sk is
    static. When Sk is dynamic the parameter stays unset and the normalizer emits the default
    from the run-time key length (NormalizerAttrInterface::emitProbability).
  }];
  let dependentDialects = ["::mlir::attn::AttnDialect"];
}

def AttnTile : Pass<"attn-tile", "::mlir::ModuleOp"> {
  let summary = "Rewrite attn.attention into the tiled flash forward kernel";
  let description = [{
    Replaces each function holding attn.attention by `@<function>_fwd(q, k, v, o, lse,
    batch, head, query_start)`, a kernel over memref views that computes one query tile:
    an scf.for over key/value blocks (bounded by the causal and window masks, so masked
    blocks are skipped and tails are exact for any lengths), an scf.for over the tile's rows,
    and per row either the online softmax (running max and sum, exp2 with log2(e) folded
    into the scale, accumulator rescale) or, for elementwise normalizers, p = f(s) straight
    into the accumulator. GQA maps query head h to key/value head h / (Hq / Hkv). Run
    attn-legalize first.
  }];
  let options = [
    Option<"queryTile", "query-tile", "int64_t", "32", "rows per query tile">,
    Option<"keyTile", "key-tile", "int64_t", "64", "keys per key/value block">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

def AttnDeriveBackward : Pass<"attn-derive-backward", "::mlir::ModuleOp"> {
  let summary = "Emit the tiled backward kernels (dQ, dK, dV) of attn.attention";
  let description = [{
    For each attn.attention, adds `@<function>_bwd_dq(q, k, v, dO, lse, delta, dQ, batch,
    head, query_start)` and `@<function>_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV, batch,
    kv_head, key_start)`. Probabilities are recomputed per tile (no S x S buffer). dS comes
    from the normalizer interface (softmax reads lse and delta = rowsum(dO * O); sigmoid,
    relu and custom normalizers need neither), score_mod is differentiated symbolically; a
    region op without a derivative rule is a diagnostic naming it. The attention op stays,
    for attn-tile to emit the forward kernel. Run attn-legalize first.
  }];
  let options = [
    Option<"queryTile", "query-tile", "int64_t", "32", "rows per query tile">,
    Option<"keyTile", "key-tile", "int64_t", "64", "keys per key/value tile">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

#endif // ATTN_PASSES_TD
