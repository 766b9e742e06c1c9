// Attention variants to PTX (and cubin through ptxas) for NVIDIA GPUs, with the launch
// contract of every kernel. Free of MLIR headers so that the runtime's JIT can include it (the
// PassManager hook names mlir::PassManager by a forward declaration only).
//
// Kernel ABI (all kernels): every memref argument is passed expanded, as MLIR's default
// calling convention lowers it: (allocated ptr, aligned ptr, i64 offset, i64 sizes[rank],
// i64 strides[rank]). q/k/v/o/dO/dQ/dK/dV are rank 4 [B, H, S, D] in the compile dtype
// with unit last stride, rows 16-byte aligned; lse and delta are rank 3 [B, Hq, Sq] f32.
//   <fn>_fwd(q, k, v, o, lse)                      grid (ceil(Sq/blockRows), Hq, B)
//   <fn>_bwd_dq(q, k, v, dO, lse, delta, dQ)       grid (ceil(Sq/blockRows), Hq, B)
//   <fn>_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV) grid (ceil(Sk/blockRows), Hkv, B)
//   <fn>_bwd_delta(o, dO, delta)                   grid (ceil(Sq/blockRows), Hq, B)
//     (row-wise normalizers only: delta = rowsum(dO * O), run before the two above)
// lse is the base-2 log-sum-exp (written by the forward, read by the backward) and delta =
// rowsum(dO * O); both are only touched for row-wise normalizers (softmax): for elementwise
// ones (sigmoid, relu, custom) any pointer may be passed and no delta pass is needed.
#ifndef CODEGEN_GPUCOMPILER_H
#define CODEGEN_GPUCOMPILER_H

#include "codegen/GpuTuning.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlir {
class PassManager;
} // namespace mlir

namespace attn::codegen {

/// A variant that cannot be compiled for the GPU; the message holds the diagnostics.
class GpuCompileError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct GpuCompileOptions {
  GpuTarget target = GpuTarget::Sm90a;
  /// Storage type of q, k, v, o and the gradients: "bf16" or "f16"; empty: the IR's when it
  /// is a 16-bit float, else bf16.
  std::string dtype = "bf16";
  /// Also emit the dQ and dK/dV kernels.
  bool backward = true;
  /// With backward: the dQ kernel also takes one f32 gradient buffer per f32 captured tensor
  /// (after the fault flags) and accumulates the captures' gradients into it (atomic adds).
  bool captureGradients = false;
  /// Overrides the tuning table.
  std::optional<GpuTileConfig> tiles;
  /// Called on each PassManager of the compile before it runs, with the stage it produces, in
  /// order: "kernels" (gpu.func), "nvvm" (LLVM/NVVM dialect), "ptx" (gpu.binary). Callers add
  /// IR printing, timing or statistics here (attnc: MLIR's command-line options; the JIT:
  /// ATTN_DUMP_DIR); what they throw propagates. Empty: the pass managers run as built.
  std::function<void(mlir::PassManager &pm, const std::string &stage)> configurePassManager;
};

/// Launch contract of one kernel.
struct GpuKernelInfo {
  std::string name;
  /// What grid x, y, z count: "query_blocks,query_heads,batch" or "key_blocks,kv_heads,batch";
  /// a block covers `blockRows` rows.
  std::string grid;
  int64_t blockRows = 0;
  int64_t threads = 0;
  /// Dynamic shared memory to launch with (above 48 KiB it needs the driver opt-in
  /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
  int64_t dynamicSharedBytes = 0;
};

struct GpuProgram {
  std::string ptx;
  std::vector<GpuKernelInfo> kernels;
  /// Row-wise normalizer: lse is written by the forward and lse/delta read by the backward.
  bool rowWise = false;
  GpuTarget target = GpuTarget::Sm90a;
  GpuTileConfig tiles;
  double compileMillis = 0;
};

/// Compiles the text of a module holding one attn.attention to PTX. Throws GpuCompileError.
GpuProgram compileAttentionToPtx(const std::string &moduleText,
                                 const GpuCompileOptions &options);

/// The ptxas to use: $ATTN_PTXAS, then ptxas on PATH, then /usr/local/cuda/bin/ptxas.
std::optional<std::string> findPtxas();
/// Assembles PTX into a cubin with `ptxas -arch=<chip>`; `log` receives ptxas -v output.
/// Throws GpuCompileError when ptxas is missing or fails.
std::string assembleCubin(const std::string &ptx, GpuTarget target, std::string *log = nullptr);

} // namespace attn::codegen

#endif // CODEGEN_GPUCOMPILER_H
