// LLVM-dialect module -> optimized LLVM IR -> relocatable object for the host, as the CPU JIT
// loads it (runtime/CpuExecutor.h). Internal to the runtime (MLIR types).
#ifndef RUNTIME_HOSTOBJECT_H
#define RUNTIME_HOSTOBJECT_H

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <string>

namespace attn::runtime {
/// The object code of `module` (already in the LLVM dialect) for the host CPU, its functions'
/// vectors kept `vectorBits` wide. With a `dumpFolder`, writes the optimized LLVM IR there as
/// `cpu-optimized.ll`. With `phases`, appends the milliseconds of each step ("to LLVM IR ..,
/// LLVM optimization .., code generation .."). Throws CompileError naming `label`.
std::string emitHostObject(mlir::ModuleOp module, int64_t vectorBits, const std::string &label,
                           const std::string &dumpFolder, std::string *phases = nullptr);

/// The LLVM passes emitHostObject runs (part of cache keys).
const char *hostObjectLlvmPipeline();
} // namespace attn::runtime

#endif // RUNTIME_HOSTOBJECT_H
