// The MLIR-free entry points: parse, compile to PTX, and ptxas for cubins.
#include "codegen/GpuCompiler.h"
#include "codegen/GpuPipeline.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>

namespace attn::codegen {

GpuProgram compileAttentionToPtx(const std::string &moduleText,
                                 const GpuCompileOptions &options) {
  mlir::DialectRegistry registry;
  registerGpuDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream(diagnostics);
  mlir::OwningOpRef<mlir::ModuleOp> module;
  {
    mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diagnostic) {
      diagnosticStream << diagnostic.getLocation() << ": " << diagnostic << "\n";
      return mlir::success();
    });
    module = mlir::parseSourceString<mlir::ModuleOp>(moduleText, &context, "attention");
  }
  if (!module)
    throw GpuCompileError("attention IR does not parse or verify:\n" + diagnostics);
  return compileModuleToPtx(*module, options);
}

std::optional<std::string> findPtxas() {
  if (const char *configured = std::getenv("ATTN_PTXAS"))
    if (llvm::sys::fs::can_execute(configured))
      return std::string(configured);
  if (auto onPath = llvm::sys::findProgramByName("ptxas"))
    return *onPath;
  if (llvm::sys::fs::can_execute("/usr/local/cuda/bin/ptxas"))
    return std::string("/usr/local/cuda/bin/ptxas");
  return std::nullopt;
}

namespace {
/// A temporary file removed on scope exit.
struct TempFile {
  llvm::SmallString<128> path;
  explicit TempFile(llvm::StringRef suffix) {
    if (llvm::sys::fs::createTemporaryFile("attn-gpu", suffix, path))
      throw GpuCompileError("cannot create a temporary ." + suffix.str() + " file");
  }
  ~TempFile() { llvm::sys::fs::remove(path); }
};

std::string readFile(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}
} // namespace

std::string assembleCubin(const std::string &ptx, GpuTarget target, std::string *log) {
  auto ptxas = findPtxas();
  if (!ptxas)
    throw GpuCompileError("ptxas not found (set ATTN_PTXAS or put the CUDA toolkit's bin on "
                          "PATH); --emit=ptx needs no toolkit");
  TempFile input("ptx"), output("cubin"), messages("log");
  {
    std::error_code error;
    llvm::raw_fd_ostream stream(input.path, error);
    if (error)
      throw GpuCompileError("cannot write " + input.path.str().str());
    stream << ptx;
  }
  std::string arch = std::string("-arch=") + gpuChip(target);
  llvm::SmallVector<llvm::StringRef> args = {*ptxas, arch, "-v", input.path, "-o", output.path};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, messages.path.str(),
                                                messages.path.str()};
  std::string failure;
  int status = llvm::sys::ExecuteAndWait(*ptxas, args, std::nullopt, redirects, 0, 0, &failure);
  std::string ptxasLog = readFile(messages.path);
  if (log)
    *log = ptxasLog;
  if (status != 0)
    throw GpuCompileError("ptxas failed (" + (failure.empty() ? "exit " + std::to_string(status)
                                                               : failure) +
                          "):\n" + ptxasLog);
  return readFile(output.path);
}

} // namespace attn::codegen
