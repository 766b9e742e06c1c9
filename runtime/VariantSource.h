// Turns a VariantSpec into the attn IR of its variant: built-in names become a generated
// function, `mlir:` text is parsed as written. MLIR types stay out of public headers; this one
// is internal to the runtime.
#ifndef RUNTIME_VARIANTSOURCE_H
#define RUNTIME_VARIANTSOURCE_H

#include "runtime/CpuKernels.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace attn::runtime {
/// A module with one function `@attention` holding one attn.attention with the spec's head
/// dims, causal flag and scale applied. Throws CompileError with the parser's or verifier's
/// diagnostics.
mlir::OwningOpRef<mlir::ModuleOp> buildVariantModule(const VariantSpec &spec,
                                                     mlir::MLIRContext &context);
} // namespace attn::runtime

#endif // RUNTIME_VARIANTSOURCE_H
