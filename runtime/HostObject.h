// LLVM-dialect module -> optimized LLVM IR -> relocatable object for the host, as the CPU JIT
// loads it (runtime/CpuExecutor.h). Internal to the runtime (MLIR types).
#ifndef RUNTIME_HOSTOBJECT_H
#define RUNTIME_HOSTOBJECT_H

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <memory>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
} // namespace llvm

namespace attn::runtime {
/// The object code of `module` (already in the LLVM dialect) for the host CPU, its functions'
/// vectors kept `vectorBits` wide. With a `dumpFolder`, writes the optimized LLVM IR there as
/// `cpu-optimized.ll`. With `phases`, appends the milliseconds of each step ("to LLVM IR ..,
/// LLVM optimization .., code generation .."). Throws CompileError naming `label`.
std::string emitHostObject(mlir::ModuleOp module, int64_t vectorBits, const std::string &label,
                           const std::string &dumpFolder, std::string *phases = nullptr);

/// The LLVM passes emitHostObject runs (part of cache keys).
const char *hostObjectLlvmPipeline();

/// The LLVM IR of one module for the host, in an LLVM context of its own, between the two
/// halves of emitHostObject: code generation may then run twice, a quick first object and the
/// optimized one later, on another thread (never two threads on one HostModule at once).
struct HostModule {
  HostModule();
  ~HostModule();
  HostModule(const HostModule &) = delete;
  HostModule &operator=(const HostModule &) = delete;
  std::unique_ptr<llvm::LLVMContext> context;
  std::unique_ptr<llvm::Module> module;
  std::string label;
  std::string dumpFolder;
  bool optimized = false; ///< the LLVM pipeline has run
};

/// How much work the code generator puts into an object.
///   Quick: the translated IR as it is (no LLVM pipeline) through LLVM's -O0 code generator
///     (FastISel, the fast register allocator, no loop strength reduction): about a third of
///     the optimized tier's time, the same arithmetic (the pipeline has no fast-math folds that
///     change results: attn-bench-compile's checksums agree bit for bit), but about 6x slower
///     code (values kept on the stack between blocks). The tiered JIT's first object.
///   Optimized: the LLVM pipeline, then CodeGenOptLevel::Aggressive; what the disk cache keeps.
enum class CodeTier { Quick, Optimized };

/// Generates code for a tiny module at both tiers, once per process: the code generator's
/// lazily constructed statics (the extended vector types' table, ...) then exist before the
/// background compiles' exit handler is registered, so they are destroyed after it ran, never
/// under a compile that the handler waits for.
void warmUpHostCodeGeneration();

/// The first half of emitHostObject: translation to LLVM IR for the host. With a
/// `dumpFolder`, the optimized tier writes its optimized IR there.
std::unique_ptr<HostModule> translateHostModule(mlir::ModuleOp module, int64_t vectorBits,
                                                const std::string &label,
                                                const std::string &dumpFolder,
                                                std::string *phases = nullptr);
/// The second half: the object code of `module` at `tier`. Quick generates code from a copy
/// and leaves `module` as it was; Optimized consumes it (the code generator's IR passes
/// rewrite it), so it is the last call on a HostModule.
std::string emitHostCode(HostModule &module, CodeTier tier, std::string *phases = nullptr);
} // namespace attn::runtime

#endif // RUNTIME_HOSTOBJECT_H
