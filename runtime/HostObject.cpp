// The object emission of the CPU JIT, shared by the attention kernels (runtime/CpuKernels.cpp)
// and the σReparam kernels: one target machine for the host (PIC, aggressive), a light LLVM
// pipeline, then the object.
#include "runtime/HostObject.h"

#include "runtime/CpuKernels.h"

#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Transforms/Utils/Cloning.h"

#include <chrono>
#include <cstdio>
#include <mutex>

namespace attn::runtime {
namespace {
std::unique_ptr<llvm::TargetMachine> hostTargetMachine(CodeTier tier = CodeTier::Optimized) {
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    throw CompileError("cannot detect the host CPU: " + llvm::toString(builder.takeError()));
  // None selects FastISel and the fast register allocator: the only per-target-machine switch
  // with a large effect (the register allocator and loop strength reduction are otherwise
  // process-wide command-line options, shared with the optimized tier on other threads).
  builder->setCodeGenOptLevel(tier == CodeTier::Quick ? llvm::CodeGenOptLevel::None
                                                      : llvm::CodeGenOptLevel::Aggressive);
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

HostModule::HostModule() = default;
HostModule::~HostModule() {
  module.reset(); // before its context
}

std::unique_ptr<HostModule> translateHostModule(mlir::ModuleOp module, int64_t vectorBits,
                                                const std::string &label,
                                                const std::string &dumpFolder,
                                                std::string *phases) {
  Clock::time_point phase = Clock::now();
  auto endPhase = [&](const char *name) {
    if (phases)
      *phases += std::string(phases->empty() ? "" : ", ") + name + " " + millisSince(phase) +
                 " ms";
    phase = Clock::now();
  };
  auto result = std::make_unique<HostModule>();
  result->label = label;
  result->dumpFolder = dumpFolder;
  result->context = std::make_unique<llvm::LLVMContext>();
  result->module = mlir::translateModuleToLLVMIR(module, *result->context);
  if (!result->module)
    throw CompileError("translating " + label + " to LLVM IR failed");
  llvm::Module &llvmModule = *result->module;
  std::unique_ptr<llvm::TargetMachine> machine = hostTargetMachine();
  const std::string bits = std::to_string(vectorBits);
  for (llvm::Function &function : llvmModule)
    if (!function.isDeclaration()) {
      function.addFnAttr("min-legal-vector-width", bits);
      function.addFnAttr("prefer-vector-width", bits);
    }
  llvmModule.setDataLayout(machine->createDataLayout());
  llvmModule.setTargetTriple(machine->getTargetTriple());
  endPhase("to LLVM IR");
  return result;
}

namespace {
/// The LLVM pipeline (kLlvmPipeline) over `host`, once.
void optimizeHostModule(HostModule &host, llvm::TargetMachine &machine) {
  if (host.optimized)
    return;
  llvm::Module &llvmModule = *host.module;
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager cgscc;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder passes(&machine);
  passes.registerModuleAnalyses(modules);
  passes.registerCGSCCAnalyses(cgscc);
  passes.registerFunctionAnalyses(functions);
  passes.registerLoopAnalyses(loops);
  passes.crossRegisterProxies(loops, functions, cgscc, modules);
  llvm::ModulePassManager pipeline;
  if (llvm::Error error = passes.parsePassPipeline(pipeline, kLlvmPipeline))
    throw CompileError("the LLVM pipeline does not parse: " + llvm::toString(std::move(error)));
  pipeline.run(llvmModule, modules);
  if (!host.dumpFolder.empty()) {
    std::error_code error;
    llvm::raw_fd_ostream file(host.dumpFolder + "/cpu-optimized.ll", error,
                              llvm::sys::fs::OF_Text);
    if (!error)
      llvmModule.print(file, nullptr);
  }
  host.optimized = true;
}
} // namespace

std::string emitHostCode(HostModule &module, CodeTier tier, std::string *phases) {
  if (!module.module)
    throw CompileError("the LLVM module of " + module.label + " was already consumed");
  std::unique_ptr<llvm::TargetMachine> machine = hostTargetMachine(tier);
  // The code generator's IR passes rewrite the module: the quick tier works on a copy, so
  // that the optimized tier later starts from the same IR. The quick tier skips the LLVM
  // pipeline: at -O0 it saves more time (9-15 ms per kernel) than it costs (3-5 ms), and the
  // code is as slow either way.
  std::unique_ptr<llvm::Module> copy;
  if (tier == CodeTier::Quick) {
    copy = llvm::CloneModule(*module.module);
  } else {
    const Clock::time_point begin = Clock::now();
    optimizeHostModule(module, *machine);
    if (phases)
      *phases += std::string(phases->empty() ? "" : ", ") + "LLVM optimization " +
                 millisSince(begin) + " ms";
  }
  const Clock::time_point start = Clock::now();
  llvm::Module &target = copy ? *copy : *module.module;
  llvm::SmallVector<char, 0> object;
  llvm::raw_svector_ostream objectStream(object);
  llvm::legacy::PassManager codegen;
  if (machine->addPassesToEmitFile(codegen, objectStream, nullptr,
                                   llvm::CodeGenFileType::ObjectFile))
    throw CompileError("the host target cannot emit object files");
  codegen.run(target);
  if (tier == CodeTier::Optimized)
    module.module.reset();
  if (phases)
    *phases += std::string(phases->empty() ? "" : ", ") +
               (tier == CodeTier::Quick ? "quick code generation " : "code generation ") +
               millisSince(start) + " ms";
  return std::string(object.begin(), object.end());
}

void warmUpHostCodeGeneration() {
  static std::once_flag once;
  std::call_once(once, [] {
    HostModule host;
    host.label = "code generator warm-up";
    host.context = std::make_unique<llvm::LLVMContext>();
    // Wide vectors (split by type legalization, as the kernels' 128-lane rows are), FMAs,
    // min/max/rounding intrinsics, compares and selects: the kinds of code the kernels hold.
    // A library call: the first InstCombine that meets one builds TargetLibraryInfo's
    // function-local libcall index, which must exist before the JIT's atexit drain registers
    // (runtime/TieredObject.h, process exit).
    const char *text = R"(
define void @warm(ptr %p, ptr %q, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %a = getelementptr <128 x float>, ptr %p, i64 %i
  %x = load <128 x float>, ptr %a
  %y = load <16 x float>, ptr %q
  %f = call <128 x float> @llvm.fma.v128f32(<128 x float> %x, <128 x float> %x, <128 x float> %x)
  %m = call <128 x float> @llvm.maxnum.v128f32(<128 x float> %f, <128 x float> %x)
  %r = call <128 x float> @llvm.roundeven.v128f32(<128 x float> %m)
  %c = fcmp olt <128 x float> %r, %x
  %s = select <128 x i1> %c, <128 x float> %r, <128 x float> %x
  %z = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %y, <16 x float> %y, <16 x float> %y)
  %t = shufflevector <16 x float> %z, <16 x float> %y, <16 x i32> <i32 0, i32 17, i32 2, i32 19, i32 4, i32 21, i32 6, i32 23, i32 8, i32 25, i32 10, i32 27, i32 12, i32 29, i32 14, i32 31>
  store <128 x float> %s, ptr %a
  store <16 x float> %t, ptr %q
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  %l = load float, ptr %q
  %e = call float @expf(float %l)
  store float %e, ptr %q
  ret void
}
declare float @expf(float)
declare <128 x float> @llvm.fma.v128f32(<128 x float>, <128 x float>, <128 x float>)
declare <128 x float> @llvm.maxnum.v128f32(<128 x float>, <128 x float>)
declare <128 x float> @llvm.roundeven.v128f32(<128 x float>)
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
)";
    llvm::SMDiagnostic error;
    host.module = llvm::parseAssemblyString(text, error, *host.context);
    if (!host.module)
      return;
    std::unique_ptr<llvm::TargetMachine> machine = hostTargetMachine();
    host.module->setDataLayout(machine->createDataLayout());
    host.module->setTargetTriple(machine->getTargetTriple());
    try {
      emitHostCode(host, CodeTier::Quick);
      emitHostCode(host, CodeTier::Optimized);
    } catch (const CompileError &) {
    }
  });
}

std::string emitHostObject(mlir::ModuleOp module, int64_t vectorBits, const std::string &label,
                           const std::string &dumpFolder, std::string *phases) {
  std::unique_ptr<HostModule> host =
      translateHostModule(module, vectorBits, label, dumpFolder, phases);
  return emitHostCode(*host, CodeTier::Optimized, phases);
}
} // namespace attn::runtime
