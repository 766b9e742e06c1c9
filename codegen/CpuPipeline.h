// The CPU pipeline: attn dialect -> tiled kernels -> LLVM dialect, ready for the ORC JIT.
#ifndef CODEGEN_CPUPIPELINE_H
#define CODEGEN_CPUPIPELINE_H

namespace mlir {
class OpPassManager;
class DialectRegistry;
} // namespace mlir

namespace attn::codegen {
/// Which of a variant's kernels a pipeline keeps: all three, or one (the JIT compiles each
/// kernel as a module of its own, the forward first and the backward on first use).
enum class CpuKernelSet { All, Forward, QueryGrad, KeyGrad };

/// What the CPU kernels are built for: the host's vector unit (the tile lowering sizes its
/// register blocks by it) and the tile sizes (the runtime launches one call per tile).
struct CpuKernelOptions {
  long lanes = 16;     // f32 lanes per vector register (AVX-512: 16, AVX2: 8)
  long registers = 32; // vector registers (AVX-512: 32, AVX2: 16)
  long queryTile = 32; // rows per query tile
  long keyTile = 64;   // keys per key/value block
  CpuKernelSet kernels = CpuKernelSet::All;
  /// Products with bf16 operands for bfloat16 inputs: "none", "avx512" (AVX512-BF16 dot
  /// products) or "amx" (AMX tiles); attn-lower-tiles-cpu's bf16-products.
  const char *bf16Products = "none";
  /// The dQ kernel also accumulates the gradients of the f32 captures the score_mod reads
  /// (attn-derive-backward's capture-gradients).
  bool captureGradients = false;
  /// With a mask region, the three kernels share a block map of the blocks' classifications
  /// (attn-tile's and attn-derive-backward's block-map): one more argument before the grid.
  bool blockMap = true;
  /// A last canonicalization of the LLVM dialect. The JIT skips it: LLVM's own passes do the
  /// same folding, and it cost ~7 ms per variant.
  bool canonicalizeLlvm = true;
};

/// The suffix of a kernel's function name (`attention_fwd`, `attention_bwd_dq`, ...).
const char *cpuKernelSuffix(CpuKernelSet kernel);

/// attn-legalize, attn-derive-backward, (the kernels not asked for dropped), attn-tile,
/// attn-lower-tiles-cpu, attn-cpu-fast-math, then the lowering to LLVM dialect.
void buildCpuPipeline(mlir::OpPassManager &pm, CpuKernelOptions options = {});
/// The lowering part alone (vector/scf/memref/math/arith/func -> LLVM dialect).
void buildCpuLoweringPipeline(mlir::OpPassManager &pm, bool canonicalizeLlvm = true);
/// Dialects and translation interfaces the pipeline and the JIT need.
void registerCpuDialects(mlir::DialectRegistry &registry);
/// Registers `attn-cpu-pipeline` and `attn-cpu-lower` as named pipelines for attn-opt.
void registerCpuPipelines();
} // namespace attn::codegen

#endif // CODEGEN_CPUPIPELINE_H
