// Whether a normalizer's formulas give 0 at a masked score (-inf) by themselves, decided by
// folding them at constants: then the lowerings leave out the select that zeroes masked
// entries (CPU and GPU alike).
#ifndef PASSES_MASKEDSCOREPROBES_H
#define PASSES_MASKEDSCOREPROBES_H

#include "dialects/attn/AttnDialect.h"

#include "mlir/IR/PatternMatch.h"

namespace mlir::attn {
/// p(-inf) folds to 0 (exp2(-inf), sigmoid(-inf), max(-inf, 0)). `fast`: the probe uses
/// emitFastProbability (the GPU's form) instead of emitProbability. `targetMath` adds the
/// patterns that rewrite math ops as the target will (the CPU's polynomials), so that the
/// probe folds the values the target computes, not the exact ones.
bool probabilityVanishesAtNegativeInfinity(
    NormalizerAttrInterface normalizer, Region &body, Location loc, bool fast,
    function_ref<void(RewritePatternSet &)> targetMath = nullptr);
/// dS folds to 0 at s = -inf (where p = 0) for every finite dP and row term. dS is linear in
/// (dP, row term), so two probes, (1, 0) and (0, 1), decide it.
bool gradientVanishesAtNegativeInfinity(NormalizerAttrInterface normalizer, Region &body,
                                        bool rowWise, Location loc);
} // namespace mlir::attn

#endif // PASSES_MASKEDSCOREPROBES_H
