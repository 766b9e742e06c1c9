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

/// A variant's module after canonicalization, and what the kernel cache keys on.
struct CanonicalVariant {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  /// The generic-form print of `module`: two spellings of one variant print the same.
  std::string keyText;
  /// The normalizer needs running statistics (lse in, delta in the backward).
  bool rowWise = false;
};
/// buildVariantModule, then the canonicalizer. Throws CompileError.
CanonicalVariant buildCanonicalVariant(const VariantSpec &spec, mlir::MLIRContext &context);
} // namespace attn::runtime

#endif // RUNTIME_VARIANTSOURCE_H
