// attn-legalize: make the defaults of attn.attention explicit attributes.
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
      NormalizerAttrInterface normalizer = op.getNormalizer();
      int64_t keyLength = op.getKey().getType().getDimSize(2);
      if (normalizer.hasUnresolvedDefaults() && !ShapedType::isDynamic(keyLength))
        op.setNormalizerAttr(cast<NormalizerAttrInterface>(normalizer.resolveDefaults(keyLength)));
    });
  }
};
} // namespace
} // namespace mlir::attn
