#ifndef ATTN_PASSES_TD
#define ATTN_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnLegalize : Pass<"attn-legalize"> {
  let summary = "Make the scale of attn.attention explicit";
  let description = [{
    Fills `scale` with 1/sqrt(D) when absent. Normalizer parameters that default to a function
    of the key length (sigmoid bias = -ln(Sk), relu scale = 1/Sk) stay unset: the normalizer
    computes them from the run-time key length, never from a size written in the types.
  }];
  let dependentDialects = ["::mlir::attn::AttnDialect"];
}

def AttnTile : Pass<"attn-tile", "::mlir::ModuleOp"> {
  let summary = "Rewrite attn.attention into the tile-level flash forward kernel";
  let description = [{
    Replaces each function holding attn.attention by `@<function>_fwd(q, k, v, o, lse,
    batch, head, query_start)`, a kernel over memref views that computes one query tile as
    target-independent tile ops: Q loaded once (scale, and the normalizer's score multiplier
    when no score_mod sits in between, folded in), then an scf.for over key/value blocks
    (bounded by the causal and window masks, so fully masked blocks are never visited) whose
    body is S = Q K^T (tile_matmul), score_mod (tile_score_mod), the mask on boundary blocks
    only (scf.if + tile_mask), the normalizer with its row state (tile_normalize) and
    O = O * correction + P V (tile_matmul with row_scale); after the loop the normalizer's
    finalize (tile_row_finalize) gives each row's output factor and LSE. GQA maps query head h
    to key/value head h / (Hq / Hkv). Run attn-legalize first; lower the tile ops with a
    target pass (attn-lower-tiles-cpu).
  }];
  let options = [
    Option<"queryTile", "query-tile", "int64_t", "32", "rows per query tile">,
    Option<"keyTile", "key-tile", "int64_t", "64", "keys per key/value block">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

def AttnDeriveBackward : Pass<"attn-derive-backward", "::mlir::ModuleOp"> {
  let summary = "Emit the tiled backward kernels (dQ, dK, dV) of attn.attention";
  let description = [{
    For each attn.attention, adds `@<function>_bwd_dq(q, k, v, dO, lse, delta, dQ, batch,
    head, query_start)` and `@<function>_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV, batch,
    kv_head, key_start)`, built from the forward's tile ops plus tile_probabilities and
    tile_score_gradient. Probabilities are recomputed per tile from the LSE (no S x S
    buffer). dS comes from the normalizer interface (row-wise normalizers read lse and
    delta = rowsum(dO * O); elementwise ones neither), score_mod is differentiated
    symbolically; a region op without a derivative rule is a diagnostic naming it, from this
    pass. The attention op stays,
    for attn-tile to emit the forward kernel. Run attn-legalize first.
  }];
  let options = [
    Option<"queryTile", "query-tile", "int64_t", "32", "rows per query tile">,
    Option<"keyTile", "key-tile", "int64_t", "64", "keys per key/value tile">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

def AttnLowerTilesCpu : Pass<"attn-lower-tiles-cpu", "::mlir::ModuleOp"> {
  let summary = "Lower the tile ops of attn-tile / attn-derive-backward to host vector code";
  let description = [{
    tile_matmul becomes register-blocked micro-kernels (a block of rows times up to four host
    vectors of accumulators held in registers over the whole reduction, one broadcast FMA per
    lhs element); the normalizer, score_mod and gradient tile ops replay the interface's scalar
    formulas over whole score rows, with vector reductions for the row state; loads, stores
    and masks work on row vectors. `vector-width` (f32 lanes) and `vector-registers` describe
    the host (AVX-512: 16 and 32; AVX2: 8 and 16); the JIT picks them from the CPU's features.
  }];
  let options = [
    Option<"vectorWidth", "vector-width", "int64_t", "16", "f32 lanes per vector register">,
    Option<"vectorRegisters", "vector-registers", "int64_t", "32", "vector registers">,
    Option<"microKernelRows", "micro-kernel-rows", "int64_t", "0",
           "rows of a tile_matmul register block (0: chosen from the register file)">,
    Option<"microKernelVectors", "micro-kernel-vectors", "int64_t", "0",
           "host vectors of a tile_matmul register block (0: chosen from the register file)">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::ub::UBDialect"];
}

def AttnCpuFastMath : Pass<"attn-cpu-fast-math", "::mlir::ModuleOp"> {
  let summary = "Vector exp2/exp/tanh as polynomials (no per-lane libm calls)";
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

def AttnTileGpu : Pass<"attn-tile-gpu", "::mlir::ModuleOp"> {
  let summary = "Lower attn.attention to tensor-core gpu.func kernels (mma.sync, cp.async)";
  let description = [{
    Replaces each function holding attn.attention by a `gpu.module @<function>_kernels` with
    `gpu.func @<function>_fwd(q, k, v, o, lse)` (and, with `backward`, `_bwd_dq(q, k, v, dO,
    lse, delta, dQ)`, `_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV)` and, for row-wise
    normalizers, `_bwd_delta(o, dO, delta)`). Grid of the forward: (ceil(Sq / (16 * warps)),
    Hq, B), one CTA per query block; B, H and S are read from the memref sizes at run time.
    Each warp owns 16 query rows.
    The query tile is loaded once; K/V blocks stream through `stages` shared-memory buffers
    with cp.async (nvgpu.device_async_copy, zero-filled past the sequence end), fragments
    come from nvgpu.ldmatrix (XOR-swizzled shared layout) and both matmuls are
    m16n8k16 nvvm.mma.sync with f32 accumulators. The normalizer is applied in registers
    through NormalizerAttrInterface::emitFastProbability: row-wise normalizers keep a running
    max and sum per row (quad shuffles) and rescale; elementwise ones keep nothing. Blocks
    outside the causal/window band are skipped, boundary blocks are masked. With fast-math,
    f32 math.exp2/exp/tanh/log/log2 become ex2/tanh/lg2.approx. Kernels carry their launch
    contract as attributes (attn.block_rows, attn.threads, attn.dynamic_shared_memory,
    attn.grid). Run attn-legalize first.
  }];
  let options = [
    Option<"warps", "warps", "int64_t", "4", "warps per CTA; each owns 16 query rows">,
    Option<"keyTile", "key-tile", "int64_t", "64", "keys per K/V block (multiple of 16)">,
    Option<"stages", "stages", "int64_t", "2", "shared-memory buffers of the K/V pipeline">,
    Option<"elementType", "element-type", "std::string", "\"\"",
           "storage type of q, k, v, o: bf16 or f16; empty: the op's when it is one of "
           "those, else bf16">,
    Option<"backward", "backward", "bool", "false", "also emit the dQ and dK/dV kernels">,
    Option<"backwardWarps", "backward-warps", "int64_t", "4",
           "warps per CTA of the dQ and dK/dV kernels">,
    Option<"backwardKeyTile", "backward-key-tile", "int64_t", "32",
           "keys per block of the dQ kernel, queries per block of the dK/dV kernel">,
    Option<"wgmma", "wgmma", "bool", "false",
           "sm_90a only: S = Q K^T of the forward with warpgroup MMAs (wgmma.mma_async) on "
           "128-byte-swizzled shared operands; needs warps % 4 == 0 and D % 64 == 0">,
    Option<"fastMath", "fast-math", "bool", "true",
           "map f32 exp2/exp/tanh/log/log2 to the approximate PTX instructions">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::gpu::GPUDialect",
                           "::mlir::nvgpu::NVGPUDialect", "::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

#endif // ATTN_PASSES_TD
