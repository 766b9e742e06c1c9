#ifndef ATTN_PASSES_TD
#define ATTN_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnLegalize : Pass<"attn-legalize"> {
  let summary = "Make the scale of attn.attention explicit and its bias a captured tensor";
  let description = [{
    Fills `scale` with 1/sqrt(D) when absent. Normalizer parameters that default to a function
    of the key length (sigmoid bias = -ln(Sk), relu scale = 1/Sk) stay unset: the normalizer
    computes them from the run-time key length, never from a size written in the types.
    An additive `bias` (f32) becomes the last capture, read by the score_mod at
    [b or 0, h or 0, q, k] and added to its result, so it is lowered, and differentiated, as a
    captured tensor.
  }];
  let dependentDialects = ["::mlir::attn::AttnDialect", "::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
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
    Option<"blockMap", "block-map", "bool", "false",
           "with a mask region, the kernel takes a block map (memref<?x?x?x?xi8>, before the "
           "grid arguments) and reads the blocks' classifications from it, classifying and "
           "writing only the entries not classified yet">,
    Option<"foldNormalizer", "fold-normalizer", "bool", "false",
           "an elementwise normalizer with a folded form g(a s + c) (sigmoid) takes a into "
           "the queries and c as the score product's init (tile_matmul init), its "
           "tile_normalize is `folded` and its masks come after it with fill 0 (not under a "
           "score_mod or a mask region). The CPU pipeline sets it.">,
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
    Option<"keyValueQueryTile", "key-value-query-tile", "int64_t", "0",
           "queries per block of the dK/dV kernel (0: query-tile)">,
    Option<"keyValueKeyTile", "key-value-key-tile", "int64_t", "0",
           "keys per tile of the dK/dV kernel (0: key-tile)">,
    Option<"captureGradients", "capture-gradients", "bool", "false",
           "the dQ kernel also accumulates the gradients of the f32 captures the score_mod "
           "reads (one more memref argument per f32 capture)">,
    Option<"blockMap", "block-map", "bool", "false",
           "with a mask region, both kernels read the forward's block map (as attn-tile's "
           "block-map): the dK/dV kernel's tiles must then be the dQ kernel's">,
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
    Option<"bf16Products", "bf16-products", "std::string", "\"none\"",
           "products with operands rounded to bf16 (for bfloat16 inputs: exact for them; P and "
           "dS rounded as on the GPU), vector-width 16 only: none (f32 FMAs), avx512 "
           "(AVX512-BF16 pair dot products) or amx (AMX tiles; f32 FMAs where the shapes do "
           "not fit). Tiles pre-scaled on load are then loaded unscaled and the products take "
           "the factor">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::ub::UBDialect",
                           "::mlir::x86vector::X86VectorDialect", "::mlir::amx::AMXDialect"];
}

def AttnCpuFastMath : Pass<"attn-cpu-fast-math", "::mlir::ModuleOp"> {
  let summary = "Vector exp2/exp/tanh as polynomials (no per-lane libm calls)";
  let description = [{
    exp2 as 2^floor(x) * p(x - floor(x)), p a degree-5 polynomial; exp and tanh through
    MLIR's polynomial approximations. With `avx512`, vectors of a multiple of 16 f32 lanes
    take AVX-512 instructions instead: exp2 as vreduceps (x - floor(x); 0 at +-inf), five FMAs
    and vscalefps (p * 2^floor(x), exact at the ends: 0 at -inf and below the denormals, +inf
    past 2^128, NaN kept), and the logistic 1 / (1 + exp(y)) (sigmoid) as that exp2 and
    vrcp14ps with one Newton step instead of exp's polynomial and a division. Needs AVX512F
    and AVX512DQ (every AVX-512 CPU but Xeon Phi).
  }];
  let options = [
    Option<"avx512", "avx512", "bool", "false",
           "use AVX-512 (F, DQ) instructions on vectors of a multiple of 16 f32 lanes">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect", "::mlir::LLVM::LLVMDialect",
                           "::mlir::x86vector::X86VectorDialect"];
}

def AttnTileGpu : Pass<"attn-tile-gpu", "::mlir::ModuleOp"> {
  let summary = "attn.attention to tensor-core gpu.func kernels through the shared tile IR";
  let description = [{
    The GPU kernel pipeline as one pass: attn-derive-backward (with `backward`; dQ tiles of
    16 * backward-warps queries x backward-key-tile keys, dK/dV tiles of backward-key-tile
    queries x 16 * backward-warps keys), attn-tile (16 * warps queries x key-tile keys),
    attn-lower-tiles-gpu and, with `fast-math`, attn-gpu-fast-math. So the GPU runs the same
    tile-level flash algorithm as the CPU; only the lowering of the tile ops differs.
    Replaces each function holding attn.attention by a `gpu.module @<function>_kernels` with
    `gpu.func @<function>_fwd(q, k, v, o, lse)` (and, with `backward`, `_bwd_dq(q, k, v, dO,
    lse, delta, dQ)`, `_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV)` and, for row-wise
    normalizers, `_bwd_delta(o, dO, delta)`). Head dims must be multiples of 16 in [16, 256].
    Run attn-legalize first.
  }];
  let options = [
    Option<"warps", "warps", "int64_t", "4", "warps per CTA; each owns 16 query rows">,
    Option<"keyTile", "key-tile", "int64_t", "64", "keys per K/V block (multiple of 16)">,
    Option<"stages", "stages", "int64_t", "2", "shared-memory buffers of the K/V pipeline">,
    Option<"elementType", "element-type", "std::string", "\"\"",
           "storage type of q, k, v, o: bf16 or f16; empty: the op's when it is one of "
           "those, else bf16">,
    Option<"backward", "backward", "bool", "false", "also emit the dQ and dK/dV kernels">,
    Option<"captureGradients", "capture-gradients", "bool", "false",
           "with backward: the dQ kernel also accumulates the gradients of the f32 captured "
           "tensors (attn-derive-backward's capture-gradients), with atomic adds">,
    Option<"backwardWarps", "backward-warps", "int64_t", "4",
           "warps per CTA of the dQ and dK/dV kernels">,
    Option<"backwardKeyTile", "backward-key-tile", "int64_t", "32",
           "keys per block of the dQ kernel, queries per block of the dK/dV kernel">,
    Option<"keyValueQueryTile", "key-value-query-tile", "int64_t", "0",
           "queries per block of the dK/dV kernel (0: backward-key-tile)">,
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
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::func::FuncDialect"];
}

def AttnLowerTilesGpu : Pass<"attn-lower-tiles-gpu", "::mlir::ModuleOp"> {
  let summary = "Lower the tile kernels of attn-tile / attn-derive-backward to tensor-core gpu.func kernels";
  let description = [{
    Each tile kernel `@<name>_fwd|_bwd_dq|_bwd_dkdv(views..., batch, head, start)` becomes
    `gpu.func` in `gpu.module @<name>_kernels`, one CTA of 16 rows per warp per tile (grid:
    start / rows, head, batch; the launch contract as attn.block_rows, attn.threads,
    attn.dynamic_shared_memory, attn.grid). Tiles only written by tile_load live in shared
    memory (cp.async, zero-filled past the sequence end, XOR-swizzled; loads inside a loop
    stream through `stages` buffers, the next blocks prefetched while one computes; a
    transposed load reads the same rows, so K and K^T share a buffer). Other tiles are
    register fragments in the mma.sync m16n8k16 accumulator layout; a tile used as the
    transposed lhs of a product is held transposed together with every tile related to it
    elementwise (dK/dV: S^T = K Q^T keeps keys on the warps). tile_matmul becomes ldmatrix +
    nvvm.mma.sync (wgmma.mma_async for the forward's S = Q K^T with `wgmma`, sm_90a);
    elementwise tile ops run per register at its fragment position through
    NormalizerAttrInterface; row reductions are quad shuffles. For row-wise normalizers a
    `_bwd_delta(o, dO, delta)` kernel joins the dQ kernel.
  }];
  let options = [
    Option<"elementType", "element-type", "std::string", "\"bf16\"",
           "storage type of q, k, v, o: bf16 or f16">,
    Option<"stages", "stages", "int64_t", "2",
           "shared-memory buffers of the forward's K/V pipeline (backward kernels: 2)">,
    Option<"wgmma", "wgmma", "bool", "false",
           "sm_90a only: the forward's S = Q K^T with warpgroup MMAs on 128-byte-swizzled "
           "shared operands; needs warps % 4 == 0 and D % 64 == 0">,
    Option<"fragmentRegisters", "fragment-registers", "int64_t", "128",
           "registers per thread that loop-carried accumulators and operand fragments read "
           "once before a loop may take; operands past it are re-read every block">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::gpu::GPUDialect",
                           "::mlir::nvgpu::NVGPUDialect", "::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

def AttnGpuFastMath : Pass<"attn-gpu-fast-math", "::mlir::ModuleOp"> {
  let summary = "f32 exp2/exp/tanh/log/log2 in gpu.module kernels to approximate PTX instructions";
  let description = [{
    ex2.approx.ftz, tanh.approx, lg2.approx as inline asm (no libdevice), math.fma as
    llvm.fma, and `contract` fast-math flags on arith ops (nvcc's -fmad=true).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::LLVM::LLVMDialect"];
}

def AttnLowerReparamLinear : Pass<"attn-lower-reparam-linear", "::mlir::ModuleOp"> {
  let summary = "attn.reparam_linear to forward and backward kernels around the host GEMM";
  let description = [{
    Replaces each function holding attn.reparam_linear (whose operands must be the function's
    arguments) by `@<function>_fwd(x, w, [bias], gamma, u, y, v, u_next, scales)` and
    `@<function>_bwd(dy, x, w, gamma, v, u_next, scales, dx, dw, [db], dgamma, compute_dx)`
    over memref views: x, dy, y, dx [N, *] with N the flattened leading dimensions. The forward
    takes the power step (v = normalize(W u), u' = normalize(W^T v), sigma = v^T W u'), stores
    u' into u when `training`, and calls the host GEMM `@attn_host_gemm_<type>` for
    y = (gamma / sigma) x W^T + bias with gamma / sigma as the product's alpha (W is never
    copied or scaled). The backward calls the GEMM for dx = (gamma / sigma) dy W and
    G = dy^T x, then forms dW = (gamma / sigma) G - (gamma / sigma^2) <G, W> v u'^T in place,
    dgamma = <G, W> / sigma and db. Loops run along rows in host vectors of `vector-width`
    f32 lanes (f64: half as many), tails masked.
  }];
  let options = [
    Option<"vectorWidth", "vector-width", "int64_t", "16", "f32 lanes per vector register">,
    Option<"kernels", "kernels", "std::string", "\"all\"",
           "which kernels to emit: all, forward or backward (the JIT compiles each alone)">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

def AttnFuseReparamAttention : Pass<"attn-fuse-reparam-attention", "::mlir::ModuleOp"> {
  let summary = "a σReparam QKV projection feeding attn.attention to block kernels over one "
                "QKV buffer";
  let description = [{
    Replaces each function holding the block attn.reparam_linear (x [B, S, E], operands the
    function's arguments) -> attn.split_heads -> attn.attention (q, k, v only) by
    `@<function>_fwd(x, w, [bias], gamma, u, qkv, out, lse, v, u_next, scales, handle)` and
    `@<function>_bwd(dout, x, w, gamma, qkv, out, lse, v, u_next, scales, dqkv, dx, dw, [db],
    dgamma, compute_dx, handle)`, plus `@<function>_attention(q, k, v)`, the attn.attention
    alone (which the runtime compiles into the attention tiles). The forward runs the σReparam
    forward (`@<function>_qkv_fwd`: the power step, then the product on the host GEMM) into
    the QKV buffer [B, S, (Hq + 2 Hkv) D] and calls `@attn_host_attention_forward(handle, q,
    k, v, out, lse)` with q, k and v strided views of that buffer (expand_shape, subview,
    transpose); the backward calls `@attn_host_attention_backward` with dQ, dK and dV views of
    one gradient buffer of the same layout, then the σReparam backward with that buffer as dy.
    No copy of q, k, v or their gradients is made. f32 only.
  }];
  let options = [
    Option<"vectorWidth", "vector-width", "int64_t", "16", "f32 lanes per vector register">,
    Option<"kernels", "kernels", "std::string", "\"all\"",
           "what to emit: all, forward, backward, or attention (only @<function>_attention)">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

def AttnLowerReparamLinearGpu : Pass<"attn-lower-reparam-linear-gpu", "::mlir::ModuleOp"> {
  let summary = "attn.reparam_linear to the device kernels around the GPU's GEMMs";
  let description = [{
    Replaces each function holding an f32 attn.reparam_linear by `gpu.module
    @<function>_kernels` with the kernels a host runs around cuBLAS's products (alpha read from
    scales[1] on the device, so W is never scaled): `_matvec` (t = W u, a warp per row),
    `_normalize` (v), `_matvec_t` (s = W^T v, a thread per column), `_power_finish` (u', sigma,
    scales = {sigma, gamma / sigma}, and u <- u' when `training`); backward `_row_inner`
    (<G_o, W_o> per row), `_sigma_factors` (<G, W>, dgamma, k = gamma <G, W> / sigma^2),
    `_sigma_term` (dW = (gamma / sigma) G - k v u'^T in place) and, with a bias, `_bias_grad`.
    Each kernel names its launch in `attn.grid` / `attn.block`. Lower with the GPU lowering
    (convert-gpu-to-nvvm, gpu-module-to-binary) to PTX.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::gpu::GPUDialect", "::mlir::LLVM::LLVMDialect"];
}

def AttnCpuToLlvm : Pass<"attn-cpu-to-llvm", "::mlir::ModuleOp"> {
  let summary = "The tiled CPU kernels to the LLVM dialect in one dialect conversion";
  let description = [{
    What convert-scf-to-cf, lower-affine, convert-math-to-llvm, convert-math-to-libm,
    convert-vector-to-llvm, finalize-memref-to-llvm, convert-arith-to-llvm,
    convert-ub-to-llvm, convert-cf-to-llvm and convert-func-to-llvm do one after another, as
    one conversion (one walk, one type converter): the vector-to-vector lowerings first, then
    every pattern set together. Math ops with an LLVM intrinsic take it; the others become
    libm calls. Run expand-strided-metadata before it and reconcile-unrealized-casts after.
  }];
  let options = [
    Option<"reassociateFPReductions", "reassociate-fp-reductions", "bool", "true",
           "vector reductions may reassociate (the score tiles' row sums)">,
    Option<"x86Vector", "x86vector", "bool", "true",
           "lower x86vector ops (the AVX512-BF16 dot products) to LLVM intrinsics">,
    Option<"amx", "amx", "bool", "true", "lower amx ops (bf16 tile products) to LLVM intrinsics">,
  ];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect", "::mlir::func::FuncDialect",
                           "::mlir::cf::ControlFlowDialect", "::mlir::arith::ArithDialect"];
}

#endif // ATTN_PASSES_TD
