// Turns a VariantSpec into the attn IR of its variant: built-in names become a generated
// function, `mlir:` text is parsed as written. MLIR types stay out of public headers; this one
// is internal to the runtime (with the diagnostic collector its compile steps share).
#ifndef RUNTIME_VARIANTSOURCE_H
#define RUNTIME_VARIANTSOURCE_H

#include "runtime/CpuKernels.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/OwningOpRef.h"

namespace attn::runtime {
/// Collects diagnostics into a string for CompileError messages.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(mlir::MLIRContext &context)
      : stream_(text_), handler_(&context, [this](mlir::Diagnostic &diagnostic) {
          stream_ << diagnostic.getLocation() << ": " << diagnostic << "\n";
          for (auto &note : diagnostic.getNotes())
            stream_ << "  note: " << note << "\n";
          return mlir::success();
        }) {}
  const std::string &text() { return text_; }

private:
  std::string text_;
  llvm::raw_string_ostream stream_;
  mlir::ScopedDiagnosticHandler handler_;
};

/// The captured tensors of a variant: the function arguments that feed the attn.attention's
/// `captures`, in the function's argument order (the order a call passes them), and where the
/// kernels take each.
struct VariantCaptures {
  /// Per call capture: what the IR declares (its static sizes recorded before they are made
  /// dynamic).
  std::vector<CaptureDeclaration> declarations;
  /// Per kernel capture (the op's `captures` operands, in order): the call capture it reads.
  std::vector<size_t> callIndex;
};

/// A module with one function `@attention` holding one attn.attention with the spec's head
/// dims, causal flag and scale applied. The spec's captures are checked against the IR's
/// (count, rank, element kind). Throws CompileError with the parser's or verifier's
/// diagnostics.
mlir::OwningOpRef<mlir::ModuleOp> buildVariantModule(const VariantSpec &spec,
                                                     mlir::MLIRContext &context,
                                                     VariantCaptures *captures = nullptr);

/// A variant's module after canonicalization, and what the kernel cache keys on.
struct CanonicalVariant {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  /// The generic-form print of `module`: two spellings of one variant print the same.
  std::string keyText;
  /// The normalizer needs running statistics (lse in, delta in the backward).
  bool rowWise = false;
  VariantCaptures captures;
};
/// buildVariantModule, then the canonicalizer. Throws CompileError.
CanonicalVariant buildCanonicalVariant(const VariantSpec &spec, mlir::MLIRContext &context);
} // namespace attn::runtime

#endif // RUNTIME_VARIANTSOURCE_H
