// The object emission of the CPU JIT, shared by the attention kernels (runtime/CpuKernels.cpp)
// and the σReparam kernels: one target machine for the host (PIC, aggressive), a light LLVM
// pipeline, then the object.
#include "runtime/HostObject.h"

#include "runtime/CpuKernels.h"

#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <chrono>
#include <cstdio>

namespace attn::runtime {
namespace {
std::unique_ptr<llvm::TargetMachine> hostTargetMachine() {
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    throw CompileError("cannot detect the host CPU: " + llvm::toString(builder.takeError()));
  builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  builder->setRelocationModel(llvm::Reloc::PIC_);
  auto machine = builder->createTargetMachine();
  if (!machine)
    throw CompileError("cannot create a target machine: " + llvm::toString(machine.takeError()));
  return std::move(*machine);
}

/// The kernels arrive from MLIR vectorized, register-blocked and canonicalized, so what is
/// left to do is promoting the descriptors' and row states' stack slots, folding the address
/// arithmetic of the unrolled blocks, and hoisting loop invariants; O2's remaining ~80 passes
/// (loop rotation, induction-variable rewriting, inlining, IPSCCP, unrolling, the vectorizers,
/// ...) cost 190 ms per attention variant and measured no faster code (attn-bench-compile
/// --speed). Part of the cache keys.
/// instcombine runs once and does not verify a fixpoint: with verification on, LLVM aborts the
/// host process (a fatal error, not a diagnostic) when one run leaves work for another, as a
/// mask region's vector compares did.
constexpr const char *kLlvmPipeline =
    "function(sroa,early-cse<memssa>,instcombine<no-verify-fixpoint>,simplifycfg,"
    "loop-mssa(licm),gvn,simplifycfg)";

using Clock = std::chrono::steady_clock;
std::string millisSince(Clock::time_point from) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f",
                std::chrono::duration<double, std::milli>(Clock::now() - from).count());
  return text;
}
} // namespace

const char *hostObjectLlvmPipeline() { return kLlvmPipeline; }

std::string emitHostObject(mlir::ModuleOp module, int64_t vectorBits, const std::string &label,
                           const std::string &dumpFolder, std::string *phases) {
  Clock::time_point phase = Clock::now();
  auto endPhase = [&](const char *name) {
    if (phases)
      *phases += std::string(phases->empty() ? "" : ", ") + name + " " + millisSince(phase) +
                 " ms";
    phase = Clock::now();
  };
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule = mlir::translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    throw CompileError("translating " + label + " to LLVM IR failed");
  std::unique_ptr<llvm::TargetMachine> machine = hostTargetMachine();
  const std::string bits = std::to_string(vectorBits);
  for (llvm::Function &function : *llvmModule)
    if (!function.isDeclaration()) {
      function.addFnAttr("min-legal-vector-width", bits);
      function.addFnAttr("prefer-vector-width", bits);
    }
  llvmModule->setDataLayout(machine->createDataLayout());
  llvmModule->setTargetTriple(machine->getTargetTriple());
  endPhase("to LLVM IR");

  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager cgscc;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder passes(machine.get());
  passes.registerModuleAnalyses(modules);
  passes.registerCGSCCAnalyses(cgscc);
  passes.registerFunctionAnalyses(functions);
  passes.registerLoopAnalyses(loops);
  passes.crossRegisterProxies(loops, functions, cgscc, modules);
  llvm::ModulePassManager pipeline;
  if (llvm::Error error = passes.parsePassPipeline(pipeline, kLlvmPipeline))
    throw CompileError("the LLVM pipeline does not parse: " + llvm::toString(std::move(error)));
  pipeline.run(*llvmModule, modules);
  if (!dumpFolder.empty()) {
    std::error_code error;
    llvm::raw_fd_ostream file(dumpFolder + "/cpu-optimized.ll", error, llvm::sys::fs::OF_Text);
    if (!error)
      llvmModule->print(file, nullptr);
  }

  llvm::SmallVector<char, 0> object;
  llvm::raw_svector_ostream objectStream(object);
  llvm::legacy::PassManager codegen;
  if (machine->addPassesToEmitFile(codegen, objectStream, nullptr,
                                   llvm::CodeGenFileType::ObjectFile))
    throw CompileError("the host target cannot emit object files");
  endPhase("LLVM optimization");
  codegen.run(*llvmModule);
  endPhase("code generation");
  return std::string(object.begin(), object.end());
}
} // namespace attn::runtime
