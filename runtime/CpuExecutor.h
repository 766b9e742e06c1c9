// Loads relocatable CPU object code (what the CPU pipeline compiles and the disk cache keeps)
// into the process through ORC, and resolves its symbols. Free of MLIR types.
#ifndef RUNTIME_CPUEXECUTOR_H
#define RUNTIME_CPUEXECUTOR_H

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace attn::runtime {

/// One loaded object; its code stays mapped for the life of the process.
class LoadedCpuObject {
public:
  virtual ~LoadedCpuObject() = default;
  /// The address of `symbol`; throws CompileError when it is missing.
  virtual void *lookup(const std::string &symbol) const = 0;
};

/// A function of this process that loaded code may call by name. Needed for functions of
/// libraries loaded with RTLD_LOCAL (Python loads libattn_torch so), which a search of the
/// process's global symbols does not find.
struct HostSymbol {
  std::string name;
  void *address;
};

/// Links `objectCode` (an ELF relocatable for the host) against `hostSymbols` and the process
/// (libm, libc) in a JIT library of its own, so objects defining the same symbols do not clash.
std::shared_ptr<const LoadedCpuObject> loadCpuObject(std::string_view objectCode,
                                                     const std::string &name,
                                                     const std::vector<HostSymbol> &hostSymbols = {});

/// Triple, CPU and features the host code is compiled for: part of every CPU cache key.
const std::string &hostTargetDescription();

} // namespace attn::runtime

#endif // RUNTIME_CPUEXECUTOR_H
