#ifndef ATTN_INTERFACES_TD
#define ATTN_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Attn_NormalizerAttrInterface : AttrInterface<"NormalizerAttrInterface"> {
  let cppNamespace = "::mlir::attn";
  let description = [{
    A normalizer maps attention scores to probabilities. Every question a pass asks about a
    normalizer goes through this interface (README invariant 1): no tiler, lowering or
    runtime file knows a normalizer by name.

    Emission is scalar and target independent: the methods emit arith/math ops on f32 values,
    and each target maps them onto its tiles (the CPU lowering replays them over vectors, the
    GPU lowering per fragment element). `score` is the scaled, score_mod-ified score times
    `getScoreMultiplier()` (the normalizer's own domain: softmax works in base 2).
    `keyLength` is the run-time key length as f32: a parameter that defaults to a function of
    it (sigmoid's bias -ln Sk, relu's scale 1/Sk) is computed from it, never from a size written
    in the IR's types. `body` is the op's `normalizer_body` region (empty unless
    `usesBodyRegion`).

    Row-wise normalizers (`getRowStateSize() > 0`) carry per-row state across key blocks. The
    tiled algorithm, for each block of a row:
      1. reduces the block's scores to their max m_b (masked scores are -inf);
      2. `emitRowShift(state, m_b)` gives the new state, the shift every score of the block is
         reduced by, and the factor that rescales what was accumulated before;
      3. p = emitProbability(s - shift) per score; masked scores get p = 0;
      4. reduces p to its sum l_b, and `emitRowAccumulate(state, l_b)` gives the new state;
      5. acc = acc * correction + p v.
    At the end `emitRowFinalize(state)` gives the factor the output row is multiplied by and the
    row's log-sum-exp (in the normalizer's domain) that the backward reads: there
    `emitBackwardProbability(s, lse)` recomputes the normalized p.
  }];
  let methods = [
    InterfaceMethod<[{Number of f32 values of per-row state the normalizer carries across key
      blocks; 0 for elementwise normalizers (p depends on its own score only).}],
      "unsigned", "getRowStateSize", (ins), [{}], [{ return 0; }]>,
    InterfaceMethod<[{True when p depends on the whole row (getRowStateSize() > 0).}],
      "bool", "isRowWise", (ins), [{}], [{ return $_attr.getRowStateSize() > 0; }]>,
    InterfaceMethod<[{True when the formula lives in the op's `normalizer_body` region.}],
      "bool", "usesBodyRegion", (ins), [{}], [{ return false; }]>,
    InterfaceMethod<[{The factor that takes a natural-unit score to the domain the other methods
      read (softmax: log2(e), so that exp becomes exp2). Tilers fold it into the queries when
      no score_mod sits in between.}],
      "double", "getScoreMultiplier", (ins), [{}], [{ return 1.0; }]>,
    InterfaceMethod<[{Elementwise normalizers whose p is g(a s + c), with a a constant and c
      a per-kernel value: a (nullopt when there is no such form). A target may then fold a into
      the queries and c into the initial value of the score product, so that the score tile
      holds u = a s + c and emitFoldedProbability(u) = g(u) is all that is left per score. It
      must then zero masked probabilities after g (p = 0) instead of writing -inf scores
      before it, so u is never +inf there (a target may rely on that: sigmoid's reciprocal
      needs no guard against it).}],
      "::std::optional<double>", "getFoldedScoreFactor", (ins), [{}],
      [{ return ::std::nullopt; }]>,
    InterfaceMethod<[{The c of getFoldedScoreFactor, from the run-time key length (f32).}],
      "::mlir::Value", "emitFoldedScoreOffset",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$keyLength),
      [{}], [{ return {}; }]>,
    InterfaceMethod<[{g(u) of getFoldedScoreFactor: the probability of u = a s + c.}],
      "::mlir::Value", "emitFoldedProbability",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$folded),
      [{}], [{ return {}; }]>,
    InterfaceMethod<[{Initial row state, getRowStateSize() values.}],
      "::llvm::SmallVector<::mlir::Value>", "emitRowStateInit",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc), [{}],
      [{ return {}; }]>,
    InterfaceMethod<[{Step 2 of a block: from the row state and the block's max score, the new
      state, the shift of the block's scores and the correction of the accumulator. Returns the
      new state followed by shift and correction.}],
      "::llvm::SmallVector<::mlir::Value>", "emitRowShift",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc,
           "::mlir::ValueRange":$state, "::mlir::Value":$blockMax), [{}],
      [{ return {}; }]>,
    InterfaceMethod<[{Step 4 of a block: folds the sum of the block's probabilities into the row
      state (state as returned by emitRowShift).}],
      "::llvm::SmallVector<::mlir::Value>", "emitRowAccumulate",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc,
           "::mlir::ValueRange":$state, "::mlir::Value":$correction,
           "::mlir::Value":$blockSum), [{}],
      [{ return ::llvm::SmallVector<::mlir::Value>(state.begin(), state.end()); }]>,
    InterfaceMethod<[{After the last block: {factor of the output row, log-sum-exp of the row}
      (-inf and factor 0 for a row with no allowed key).}],
      "::std::pair<::mlir::Value, ::mlir::Value>", "emitRowFinalize",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc,
           "::mlir::ValueRange":$state), [{}],
      [{ return {}; }]>,
    InterfaceMethod<[{Emits p = f(score) (elementwise) or the row-wise numerator of an already
      shifted score.}],
      "::mlir::Value", "emitProbability",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$score,
           "::mlir::Value":$keyLength, "::mlir::Region &":$body)>,
    InterfaceMethod<[{Emits the same p as emitProbability in the form that suits targets with
      fast approximate transcendental units (GPU ex2.approx, tanh.approx): the GPU lowering maps
      math.exp2 and math.tanh to one instruction each. Defaults to emitProbability.}],
      "::mlir::Value", "emitFastProbability",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$score,
           "::mlir::Value":$keyLength, "::mlir::Region &":$body), [{}],
      [{ return $_attr.emitProbability(builder, loc, score, keyLength, body); }]>,
    InterfaceMethod<[{The normalized p the backward recomputes from the score and the row's
      log-sum-exp `lse` (null for elementwise normalizers). Elementwise: emitProbability.}],
      "::mlir::Value", "emitBackwardProbability",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$score,
           "::mlir::Value":$lse, "::mlir::Value":$keyLength, "::mlir::Region &":$body,
           "bool":$fast), [{}],
      [{ return fast ? $_attr.emitFastProbability(builder, loc, score, keyLength, body)
                     : $_attr.emitProbability(builder, loc, score, keyLength, body); }]>,
    InterfaceMethod<[{Emits dS (w.r.t. the natural-unit score) from the score s, the probability
      p (normalized, for row-wise normalizers), and dP = dO . v. `rowTerm` is rowsum(dO * O) for
      row-wise normalizers and null otherwise. Fails, with a diagnostic at `loc`, when the
      formula has no derivative.}],
      "::mlir::FailureOr<::mlir::Value>", "emitScoreGradient",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$score,
           "::mlir::Value":$prob, "::mlir::Value":$gradProb, "::mlir::Value":$rowTerm,
           "::mlir::Value":$keyLength, "::mlir::Region &":$body)>,
  ];
}

#endif // ATTN_INTERFACES_TD
