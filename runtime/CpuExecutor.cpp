#include "runtime/CpuExecutor.h"

#include "runtime/CpuKernels.h"

#include "llvm/ExecutionEngine/Orc/AbsoluteSymbols.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/TargetSelect.h"

#include <atomic>
#include <mutex>

namespace attn::runtime {
namespace {
void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

/// One LLJIT for the process, never destroyed (see Jit.h on static destruction).
llvm::orc::LLJIT &processJit() {
  static llvm::orc::LLJIT *jit = [] {
    initializeNativeTarget();
    auto created = llvm::orc::LLJITBuilder().create();
    if (!created)
      throw CompileError("cannot create the ORC JIT: " + llvm::toString(created.takeError()));
    return created->release();
  }();
  return *jit;
}

class OrcLoadedObject final : public LoadedCpuObject {
public:
  OrcLoadedObject(llvm::orc::JITDylib &library, std::string name)
      : library_(library), name_(std::move(name)) {}

  void *lookup(const std::string &symbol) const override {
    auto address = processJit().lookup(library_, symbol);
    if (!address)
      throw CompileError("JIT lookup of '" + symbol + "' in " + name_ +
                         " failed: " + llvm::toString(address.takeError()));
    return address->toPtr<void *>();
  }

private:
  llvm::orc::JITDylib &library_;
  std::string name_;
};
} // namespace

std::shared_ptr<const LoadedCpuObject> loadCpuObject(std::string_view objectCode,
                                                     const std::string &name,
                                                     const std::vector<HostSymbol> &hostSymbols) {
  llvm::orc::LLJIT &jit = processJit();
  static std::atomic<uint64_t> counter{0};
  std::string libraryName = name + "#" + std::to_string(counter.fetch_add(1));
  // ORC's session is thread-safe, but creating a dylib and adding its first object are two
  // steps; serialize them so a half-set-up dylib is never looked up.
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto library = jit.createJITDylib(libraryName);
  if (!library)
    throw CompileError("cannot create JIT library " + libraryName + ": " +
                       llvm::toString(library.takeError()));
  auto processSymbols = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      jit.getDataLayout().getGlobalPrefix());
  if (!processSymbols)
    throw CompileError("cannot expose process symbols to the JIT: " +
                       llvm::toString(processSymbols.takeError()));
  library->addGenerator(std::move(*processSymbols));
  if (!hostSymbols.empty()) {
    llvm::orc::SymbolMap symbols;
    for (const HostSymbol &symbol : hostSymbols)
      symbols[jit.mangleAndIntern(symbol.name)] = {
          llvm::orc::ExecutorAddr::fromPtr(symbol.address),
          llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable};
    if (llvm::Error error = library->define(llvm::orc::absoluteSymbols(std::move(symbols))))
      throw CompileError("cannot define the host symbols of " + name + ": " +
                         llvm::toString(std::move(error)));
  }
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(
      llvm::StringRef(objectCode.data(), objectCode.size()), libraryName);
  if (llvm::Error error = jit.addObjectFile(*library, std::move(buffer)))
    throw CompileError("cannot load object code of " + name + ": " +
                       llvm::toString(std::move(error)));
  return std::make_shared<OrcLoadedObject>(*library, name);
}

const std::string &hostTargetDescription() {
  static const std::string description = [] {
    initializeNativeTarget();
    auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
    if (!builder)
      throw CompileError("cannot detect the host CPU: " + llvm::toString(builder.takeError()));
    return "cpu " + builder->getTargetTriple().str() + " " + builder->getCPU() + " " +
           builder->getFeatures().getString();
  }();
  return description;
}
} // namespace attn::runtime
