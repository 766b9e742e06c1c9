// The same steps as the attention JIT's object emission (runtime/CpuKernels.cpp), shared here
// for the σReparam kernels: one target machine for the host (PIC, aggressive), a light LLVM
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

/// The kernels arrive vectorized from MLIR: promote the descriptors' stack slots, fold the
/// address arithmetic, hoist loop invariants (the row loops' dims and broadcasts).
constexpr const char *kLlvmPipeline =
    "function(sroa,early-cse<memssa>,instcombine,simplifycfg,loop-mssa(licm),gvn,simplifycfg)";
} // namespace

const char *hostObjectLlvmPipeline() { return kLlvmPipeline; }

std::string emitHostObject(mlir::ModuleOp module, int64_t vectorBits, const std::string &label,
                           const std::string &dumpFolder) {
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
  codegen.run(*llvmModule);
  return std::string(object.begin(), object.end());
}
} // namespace attn::runtime
