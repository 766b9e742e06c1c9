// The `_bwd_delta` kernel of the GPU backward: delta = rowsum(dO * O) per query row, the row
// term that row-wise normalizers' score gradients read. It is a row reduction, not part of
// the flash algorithm, so it is emitted beside the lowered tile kernels rather than as tile IR.
#include "passes/GpuFragments.h"

namespace mlir::attn::gpu_fragments {

void emitRowDeltaKernel(OpBuilder &b, Location loc, gpu::GPUModuleOp module, StringRef name,
                        Type element, int64_t valueHeadDim, int64_t warps) {
  FragmentBuilder g(b, loc, element, warps);
  MemRefType view4 = globalView(element, 4), rowType = globalView(b.getF32Type(), 3);
  auto kernel = createGpuKernel(b, loc, module, name, {view4, view4, rowType}, warps,
                                g.threads(), 0, "query_blocks,query_heads,batch");
  // Memory-bound: leave the register budget to ptxas's occupancy heuristics.
  kernel->removeAttr("nvvm.minctasm");
  auto args = kernel.getArguments();
  Value o = args[0], gradOut = args[1], delta = args[2];
  g.initThread();
  Value batch = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value row = g.add(
      g.mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x), g.idx(g.threads())),
      g.threadId);
  Value rows = memref::DimOp::create(b, loc, o, 2);
  scf::IfOp::create(b, loc, g.lt(row, rows), [&](OpBuilder &, Location) {
    auto chunkType = VectorType::get({kChunk}, element);
    auto wideType = VectorType::get({kChunk}, b.getF32Type());
    Value sum = arith::ConstantOp::create(b, loc, wideType,
                                          DenseElementsAttr::get(wideType, 0.0f));
    for (int64_t c = 0; c < valueHeadDim; c += kChunk) {
      SmallVector<Value> at{batch, head, row, g.idx(c)};
      Value x = arith::ExtFOp::create(b, loc, wideType,
                                      vector::LoadOp::create(b, loc, chunkType, o, at).getResult());
      Value y = arith::ExtFOp::create(b, loc, wideType,
                                      vector::LoadOp::create(b, loc, chunkType, gradOut, at).getResult());
      sum = vector::FMAOp::create(b, loc, x, y, sum);
    }
    Value total = vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, sum);
    memref::StoreOp::create(b, loc, total, delta, ValueRange{batch, head, row});
    scf::YieldOp::create(b, loc);
  });
  gpu::ReturnOp::create(b, loc);
}

} // namespace mlir::attn::gpu_fragments
