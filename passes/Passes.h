// The attn passes. Registration happens through registerAttnPasses().
#ifndef PASSES_PASSES_H
#define PASSES_PASSES_H

#include "mlir/Pass/Pass.h"

#include <memory>

namespace mlir::attn {
#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"
} // namespace mlir::attn

#endif // PASSES_PASSES_H
