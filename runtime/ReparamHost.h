// Internal to the runtime: the host GEMM the σReparam kernels call, shared by the σReparam
// linear (ReparamKernels.cpp) and the fused σReparam-QKV attention block
// (ReparamAttention.cpp), whose kernels call the same `attn_host_gemm_<type>`.
#ifndef RUNTIME_REPARAMHOST_H
#define RUNTIME_REPARAMHOST_H

#include "runtime/CpuExecutor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace attn::runtime {
/// `_mlir_ciface_attn_host_gemm_f32/_f64`, bound to the installed host GEMM.
const std::vector<HostSymbol> &reparamGemmSymbols();
/// Whether runtime::setHostGemm installed one.
bool hostGemmInstalled();
/// After a kernel call: throws std::runtime_error("<what>: <message>") with the first error
/// the host GEMM raised on this thread during the call (and clears it).
void throwIfGemmFailed(const char *what);
/// f32 lanes of the host's vectors (ATTN_CPU_LANES forces 4, 8 or 16). Throws CompileError.
int64_t reparamHostLanes();
} // namespace attn::runtime

#endif // RUNTIME_REPARAMHOST_H
