// attn-legalize: make the defaults of attn.attention explicit attributes. Only defaults that
// hold for every call are filled: the scale 1/sqrt(D) (D is static). Normalizer parameters that
// default to a function of the key length stay unset; the kernels compute them from the
// run-time length, so a size written in the IR's types never changes what a variant means.
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLEGALIZE
#include "passes/Passes.h.inc"

namespace {
struct AttnLegalizePass : impl::AttnLegalizeBase<AttnLegalizePass> {
  void runOnOperation() override {
    getOperation()->walk([](AttentionOp op) {
      if (!op.getScaleAttr())
        op.setScaleAttr(Builder(op).getF32FloatAttr(op.getEffectiveScale()));
    });
  }
};
} // namespace
} // namespace mlir::attn
