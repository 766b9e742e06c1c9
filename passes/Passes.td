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

#endif // ATTN_PASSES_TD
