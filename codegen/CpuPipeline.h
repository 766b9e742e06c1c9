// The CPU pipeline: attn dialect -> tiled kernels -> LLVM dialect, ready for the ORC JIT.
#ifndef CODEGEN_CPUPIPELINE_H
#define CODEGEN_CPUPIPELINE_H

namespace mlir {
class OpPassManager;
class DialectRegistry;
} // namespace mlir

namespace attn::codegen {
/// What the CPU kernels are built for: the host's vector unit (the tile lowering sizes its
/// register blocks by it) and the tile sizes (the runtime launches one call per tile).
struct CpuKernelOptions {
  long lanes = 16;     // f32 lanes per vector register (AVX-512: 16, AVX2: 8)
  long registers = 32; // vector registers (AVX-512: 32, AVX2: 16)
  long queryTile = 32; // rows per query tile
  long keyTile = 64;   // keys per key/value block
};

/// attn-legalize, attn-derive-backward, attn-tile, attn-lower-tiles-cpu, attn-cpu-fast-math,
/// then the lowering to LLVM dialect.
void buildCpuPipeline(mlir::OpPassManager &pm, CpuKernelOptions options = {});
/// The lowering part alone (vector/scf/memref/math/arith/func -> LLVM dialect).
void buildCpuLoweringPipeline(mlir::OpPassManager &pm);
/// Dialects and translation interfaces the pipeline and the JIT need.
void registerCpuDialects(mlir::DialectRegistry &registry);
/// Registers `attn-cpu-pipeline` and `attn-cpu-lower` as named pipelines for attn-opt.
void registerCpuPipelines();
} // namespace attn::codegen

#endif // CODEGEN_CPUPIPELINE_H
