// The GPU pipelines: attn dialect -> gpu.func kernels (attn-tile-gpu) -> NVVM/LLVM dialect ->
// PTX through gpu-module-to-binary. Stages are separate so that attnc can print each one.
#ifndef CODEGEN_GPUPIPELINE_H
#define CODEGEN_GPUPIPELINE_H

#include "codegen/GpuCompiler.h"

#include <optional>
#include <string>

namespace mlir {
class OpPassManager;
class DialectRegistry;
class ModuleOp;
} // namespace mlir

namespace attn::codegen {

/// canonicalize, attn-legalize, attn-tile-gpu with the options' tiles, canonicalize, cse.
void buildGpuKernelPipeline(mlir::OpPassManager &pm, const GpuCompileOptions &options,
                            const GpuTileConfig &tiles);
/// gpu/nvgpu/vector/memref/scf/arith -> NVVM + LLVM dialect, `#nvvm.target` attached.
void buildGpuLoweringPipeline(mlir::OpPassManager &pm, GpuTarget target);
/// gpu-module-to-binary{format=isa}: each gpu.module becomes a gpu.binary holding PTX;
/// `libdevice` (a path, may be empty) is linked for math that lowers to __nv_* calls.
void buildGpuPtxPipeline(mlir::OpPassManager &pm, const std::string &libdevice);
/// CUDA's libdevice.10.bc under $ATTN_CUDA_HOME, $CUDA_HOME, $CUDA_PATH or /usr/local/cuda.
std::optional<std::string> findLibdevice();

/// Dialects, ConvertToLLVM interfaces, LLVM IR translations and the NVVM target model the GPU
/// pipelines need in-process.
void registerGpuDialects(mlir::DialectRegistry &registry);
/// Registers `attn-sm80-pipeline` and `attn-sm90a-pipeline` (attn dialect to PTX in a
/// gpu.binary) for attn-opt, with options head-dim, element-type and backward.
void registerGpuPipelines();

/// The tiles for `module`'s attention op on `options.target` (options.tiles when set).
/// Throws GpuCompileError for unsupported head dims.
GpuTileConfig selectGpuTiles(mlir::ModuleOp module, const GpuCompileOptions &options);
/// Compiles a module holding one attn.attention (in a func.func) to PTX through three pass
/// managers (kernels, nvvm, ptx), each handed to options.configurePassManager first. Throws
/// GpuCompileError with the diagnostics.
GpuProgram compileModuleToPtx(mlir::ModuleOp module, const GpuCompileOptions &options);

} // namespace attn::codegen

#endif // CODEGEN_GPUPIPELINE_H
