#ifndef ATTN_ATTRS_TD
#define ATTN_ATTRS_TD

include "mlir/IR/AttrTypeBase.td"
include "dialects/attn/AttnDialect.td"
include "dialects/attn/AttnInterfaces.td"

class Attn_NormalizerAttr<string name, string attrMnemonic, list<string> extraMethods = []>
    : AttrDef<Attn_Dialect, name,
              [DeclareAttrInterfaceMethods<Attn_NormalizerAttrInterface, extraMethods>]> {
  let mnemonic = attrMnemonic;
}

defvar RowWiseMethods = ["getRowStateSize", "getScoreMultiplier", "emitRowStateInit",
                         "emitRowShift", "emitRowAccumulate", "emitRowFinalize",
                         "emitBackwardProbability"];

def Attn_SoftmaxAttr : Attn_NormalizerAttr<"Softmax", "softmax", RowWiseMethods> {
  let summary = "row-wise softmax: p = exp(s - max) / sum(exp(s - max))";
}

def Attn_Softmax1Attr : Attn_NormalizerAttr<"Softmax1", "softmax1", RowWiseMethods> {
  let summary = "off-by-one softmax: p = exp(s - max) / (exp(-max) + sum(exp(s - max)))";
  let description = [{
    Softmax with a virtual extra score of 0, so a row may sum to less than 1 (a head can
    attend to nothing). The same online algorithm as softmax, started from the state of
    that virtual score (max 0, sum 1); its LSE is log(1 + sum exp(s)) and its gradient
    softmax's.
  }];
}

def Attn_SigmoidAttr : Attn_NormalizerAttr<"Sigmoid", "sigmoid",
    ["emitFastProbability", "getFoldedScoreFactor", "emitFoldedScoreOffset",
     "emitFoldedProbability"]> {
  let summary = "elementwise sigmoid(s + bias); the bias defaults to -ln(Sk), Sk the run-time key length";
  let parameters = (ins OptionalParameter<"::mlir::FloatAttr">:$bias);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Attn_ReluAttr : Attn_NormalizerAttr<"Relu", "relu"> {
  let summary = "elementwise relu(s) * scale; the scale defaults to 1/Sk, Sk the run-time key length";
  let parameters = (ins OptionalParameter<"::mlir::FloatAttr">:$scale);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Attn_CustomAttr : Attn_NormalizerAttr<"Custom", "custom", ["usesBodyRegion"]> {
  let summary = "elementwise normalizer whose formula is the op's normalizer_body region";
}

#endif // ATTN_ATTRS_TD
