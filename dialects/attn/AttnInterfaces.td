#ifndef ATTN_INTERFACES_TD
#define ATTN_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Attn_NormalizerAttrInterface : AttrInterface<"NormalizerAttrInterface"> {
  let cppNamespace = "::mlir::attn";
  let description = [{
    A normalizer maps attention scores to probabilities. Every question a pass asks about a
    normalizer goes through this interface (README invariant 1).

    Scalar emission works on f32 values: `score` is the scaled (and score_mod-ified) score.
    For row-wise normalizers `emitProbability` returns the unnormalized numerator of an
    already max-shifted score; the tiling pass owns the running max/sum and the final division.
    `keyLength` is the run-time key length as f32. A parameter that defaults to a function of
    the key length (sigmoid's bias -ln Sk, relu's scale 1/Sk) is always computed from it, never
    from a size written in the IR's types: a variant means the same at every size. `body` is the op's
    `normalizer_body` region (empty unless `usesBodyRegion`).
  }];
  let methods = [
    InterfaceMethod<[{True when p depends on the whole row: the tiled algorithm then carries a
      running max and sum and rescales the accumulator when the max grows.}],
      "bool", "isRowWise">,
    InterfaceMethod<[{True when the formula lives in the op's `normalizer_body` region.}],
      "bool", "usesBodyRegion", (ins), [{}], [{ return false; }]>,
    InterfaceMethod<[{Emits p = f(score) (elementwise) or the row-wise numerator.}],
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
    InterfaceMethod<[{Emits dS from the score s, the probability p (normalized, for row-wise
      normalizers), and dP = dO . v. `rowTerm` is rowsum(dO * O) for row-wise normalizers and
      null otherwise. Fails, with a diagnostic at `loc`, when the formula has no derivative.}],
      "::mlir::FailureOr<::mlir::Value>", "emitScoreGradient",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc, "::mlir::Value":$score,
           "::mlir::Value":$prob, "::mlir::Value":$gradProb, "::mlir::Value":$rowTerm,
           "::mlir::Value":$keyLength, "::mlir::Region &":$body)>,
  ];
}

#endif // ATTN_INTERFACES_TD
