// attn-lower-tiles-gpu: lowers the tile kernels of attn-tile / attn-derive-backward (the one
// flash algorithm, written as tile ops) to tensor-core gpu.func kernels.
//
// A kernel `@<name>_fwd|_bwd_dq|_bwd_dkdv(views..., batch, head, start)` becomes a gpu.func of
// 16 * warps rows per CTA (grid: start / rows, head, batch). Each tile gets a placement:
//   - tiles only written by tile_load are operands: shared memory, filled by cp.async with the
//     global rows as stored (a transposed load is a transposed view of the same rows, so K and
//     K^T share one buffer); loads inside a loop stream through `stages` buffers (prefetch of
//     block n + stages - 1 while block n computes);
//   - other 2-D tiles are register fragments in the mma.sync accumulator layout, each warp
//     owning 16 rows. A tile used as the transposed lhs of a product (P^T dO in dK/dV) is held
//     transposed, with everything computed elementwise with it: S^T = K Q^T then keeps keys on
//     the warps, and P^T, dS^T are A operands straight from the registers;
//   - 1-D tiles are per-row (or per-column, for a transposed group) registers.
// tile_matmul becomes ldmatrix + mma.sync m16n8k16 (wgmma on sm_90a for the forward's
// S = Q K^T); the elementwise tile ops run per register with the (row, key) of its fragment
// position; row reductions are quad shuffles. Register tiles are carried through scf.for and
// scf.if as values (no local memory). A shared operand read by a loop but loaded before it
// is read into fragments once, before the loop, while the register budget allows.
#include "passes/GpuTileLowering.h"
#include "passes/Passes.h"

#include "llvm/ADT/SetVector.h"

#include <functional>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERTILESGPU
#include "passes/Passes.h.inc"

namespace gpu_lowering {

LogicalResult KernelLowering::emit(gpu::GPUModuleOp module) {
  StringRef name = source.getName();
  bool keyBlocks = name.ends_with("_bwd_dkdv");
  // Views: rank-4 f32 views become views of the storage type; rank-3 ones (lse, delta) stay f32;
  // the per-batch key lengths and fault flags (rank 1) are read as they are, and so are the
  // captured tensors (identity layout, any rank).
  SmallVector<Type> arguments;
  unsigned viewCount = source.getNumArguments() - 3;
  for (unsigned i = 0; i < viewCount; ++i) {
    auto type = cast<MemRefType>(source.getArgument(i).getType());
    bool view = isa<StridedLayoutAttr>(type.getLayout());
    arguments.push_back(view && type.getRank() == 4   ? globalView(options.element, 4)
                        : view && type.getRank() == 3 ? globalView(b.getF32Type(), 3)
                        : type.getRank() == 1         ? globalView(type.getElementType(), 1)
                                                      : Type(type));
  }
  int64_t sharedBytes = 0;
  bool anyAtoms = false;
  for (SharedBuffer &buffer : buffers) {
    buffer.offset = sharedBytes;
    sharedBytes += buffer.stages * buffer.rows * buffer.width *
                   options.element.getIntOrFloatBitWidth() / 8;
    anyAtoms |= buffer.atoms;
  }
  // wgmma's swizzled operands need 1024-byte-aligned atoms: room to align the base.
  int64_t launchBytes = sharedBytes + (anyAtoms ? 1024 : 0);
  auto kernel = createGpuKernel(b, loc, module, name, arguments, warps, blockRows, launchBytes,
                                keyBlocks ? "key_blocks,kv_heads,batch"
                                          : "query_blocks,query_heads,batch");
  g.emplace(b, loc, options.element, warps);
  for (unsigned i = 0; i < viewCount; ++i)
    map.map(source.getArgument(i), kernel.getArgument(i));
  g->initThread();
  map.map(source.getArgument(viewCount), gpu::BlockIdOp::create(b, loc, gpu::Dimension::z));
  map.map(source.getArgument(viewCount + 1),
          gpu::BlockIdOp::create(b, loc, gpu::Dimension::y));
  map.map(source.getArgument(viewCount + 2),
          g->mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x), g->idx(blockRows)));
  warpRow = g->mul(g->warp, g->idx(16));

  if (!buffers.empty()) {
    auto sharedType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                      MemRefLayoutAttrInterface{}, g->workgroup());
    Value shared = gpu::DynamicSharedMemoryOp::create(b, loc, sharedType);
    Value pad = g->idx(0);
    if (anyAtoms) {
      Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, shared);
      pad = g->rem(g->sub(g->idx(1024), g->rem(base, 1024)), 1024);
    }
    for (SharedBuffer &buffer : buffers) {
      SmallVector<int64_t> shape;
      if (buffer.streamed)
        shape.push_back(buffer.stages);
      if (buffer.atoms)
        shape.append({buffer.width / kAtomColumns, buffer.rows, kAtomColumns});
      else
        shape.append({buffer.rows, buffer.width});
      auto type =
          MemRefType::get(shape, options.element, MemRefLayoutAttrInterface{}, g->workgroup());
      buffer.view = memref::ViewOp::create(b, loc, type, shared,
                                           g->add(pad, g->idx(buffer.offset)), ValueRange{});
    }
  }
  if (failed(lowerBlock(source.getBody().front())))
    return failure();
  return success();
}

LogicalResult KernelLowering::lowerBlock(Block &block) {
  for (Operation &op : block)
    if (failed(lowerOp(&op)))
      return failure();
  return success();
}

LogicalResult KernelLowering::lowerOp(Operation *op) {
  if (isa<memref::AllocaOp, memref::AllocOp>(op) && isTile(op->getResult(0)))
    return success();
  if (auto dealloc = dyn_cast<memref::DeallocOp>(op); dealloc && isTile(dealloc.getMemref()))
    return success();
  if (isa<scf::YieldOp>(op))
    return success();
  if (isa<func::ReturnOp>(op)) {
    gpu::ReturnOp::create(b, loc);
    return success();
  }
  if (auto loop = dyn_cast<scf::ForOp>(op))
    return lowerFor(loop);
  if (auto branch = dyn_cast<scf::IfOp>(op))
    return lowerIf(branch);
  if (auto load = dyn_cast<TileLoadOp>(op))
    return lowerLoad(load);
  if (auto store = dyn_cast<TileStoreOp>(op))
    return lowerStore(store);
  if (auto matmul = dyn_cast<TileMatmulOp>(op))
    return lowerMatmul(matmul);
  if (auto mask = dyn_cast<TileMaskOp>(op))
    return lowerMask(mask);
  if (auto classify = dyn_cast<TileMaskClassifyOp>(op))
    return lowerMaskClassify(classify);
  if (auto maskRegion = dyn_cast<TileMaskRegionOp>(op))
    return lowerMaskRegion(maskRegion);
  if (auto mod = dyn_cast<TileScoreModOp>(op))
    return lowerScoreMod(mod);
  if (auto normalize = dyn_cast<TileNormalizeOp>(op))
    return lowerNormalize(normalize);
  if (auto finalize = dyn_cast<TileRowFinalizeOp>(op))
    return lowerRowFinalize(finalize);
  if (auto probabilities = dyn_cast<TileProbabilitiesOp>(op))
    return lowerProbabilities(probabilities);
  if (auto gradient = dyn_cast<TileScoreGradientOp>(op))
    return lowerScoreGradient(gradient);
  if (auto copy = dyn_cast<TileCopyOp>(op))
    return lowerCopy(copy);
  if (auto captureGradient = dyn_cast<TileCaptureGradientOp>(op))
    return lowerCaptureGradient(captureGradient);
  if (auto fill = dyn_cast<TileFillOp>(op)) {
    TileLayout &l = layout(fill.getTile());
    if (l.placement == Placement::Shared)
      return fill.emitError("GPU lowering: tile_fill of a shared operand");
    registers[fill.getTile()] = SmallVector<Value>(
        registerCount(l), g->f32(fill.getValue().convertToDouble()));
    return success();
  }
  if (auto init = dyn_cast<TileRowInitOp>(op)) {
    SmallVector<Value> state = init.getNormalizer().emitRowStateInit(b, loc);
    if (state.size() != init.getState().size())
      return init.emitError("normalizer's emitRowStateInit returned ")
             << state.size() << " values, expected " << init.getState().size();
    for (auto [value, tile] : llvm::zip(state, init.getState()))
      registers[tile] = SmallVector<Value>(registerCount(layout(tile)), value);
    return success();
  }
  for (Value operand : op->getOperands())
    if (isTile(operand))
      return op->emitError("GPU lowering: unsupported use of a tile");
  if (op->getNumRegions() != 0)
    return op->emitError("GPU lowering: unsupported op with regions in a tile kernel");
  b.clone(*op, map);
  return success();
}

// ----- control flow: register tiles become loop-carried values and if results -----

Value KernelLowering::materialize(Value v, scf::ForOp loop, IRMapping &shifted) {
  if (Value known = shifted.lookupOrNull(v))
    return known;
  Operation *def = v.getDefiningOp();
  if (!def || !loop->isProperAncestor(def))
    return mapped(v);
  for (Value operand : def->getOperands())
    shifted.map(operand, materialize(operand, loop, shifted));
  b.clone(*def, shifted);
  return shifted.lookup(v);
}

Value KernelLowering::issueStreamed(scf::ForOp loop, ArrayRef<TileLoadOp> loads, Value iv,
                                    Value stage) {
  IRMapping shifted;
  shifted.map(loop.getInductionVar(), iv);
  // Blocks past the loop's end are zero-filled without reading: the groups in flight stay
  // uniform.
  Value inRange = g->lt(iv, mapped(loop.getUpperBound()));
  SmallVector<Value> tokens;
  for (TileLoadOp load : loads) {
    SharedBuffer &buffer = buffers[layout(load.getTile()).buffer];
    // Past the end: rows [0, 0), so that the (unread) source address stays inside the tensor.
    Value start = g->select(inRange, materialize(load.getStart(), loop, shifted), g->idx(0));
    Value count = g->select(inRange, materialize(load.getCount(), loop, shifted), g->idx(0));
    auto more = g->copyTile(mapped(load.getSource()), materialize(load.getBatch(), loop, shifted),
                            materialize(load.getHead(), loop, shifted), start,
                            g->add(start, count), buffer.view, stage, buffer.rows,
                            buffer.width, buffer.atoms);
    tokens.append(more.begin(), more.end());
  }
  return g->commit(tokens);
}

void KernelLowering::hoistFragments(scf::ForOp loop, int64_t carried) {
  int64_t used = carried;
  for (Operation &op : loop.getBody()->getOperations()) {
    auto matmul = dyn_cast<TileMatmulOp>(&op);
    if (!matmul || wgmmaProducts.contains(matmul))
      continue;
    TileLayout &acc = layout(matmul.getAcc());
    Value operand = acc.transposed ? matmul.getRhs() : matmul.getLhs();
    TileLayout &l = layout(operand);
    if (l.placement != Placement::Shared || buffers[l.buffer].streamed ||
        hoisted.count(l.buffer))
      continue;
    if (acc.transposed != l.loadedTransposed)
      continue;
    int64_t kSteps = buffers[l.buffer].width / 16;
    if (used + 4 * kSteps > options.fragmentBudget)
      continue;
    used += 4 * kSteps;
    SharedBuffer &buffer = buffers[l.buffer];
    auto &fragments = hoisted[l.buffer];
    for (int64_t kk = 0; kk < kSteps; ++kk)
      fragments.push_back(
          g->loadRowMajorA(buffer.view, buffer.stage, warpRow, kk, buffer.width / kChunk));
  }
}

LogicalResult KernelLowering::lowerFor(scf::ForOp op) {
  if (op.getNumResults() != 0)
    return op.emitError("GPU lowering: a loop with results in a tile kernel");
  Value lb = mapped(op.getLowerBound()), ub = mapped(op.getUpperBound()),
        step = mapped(op.getStep());
  SmallVector<Value> carried = registerTilesWrittenIn(op);
  SmallVector<Value> init;
  for (Value tile : carried)
    init.append(registers[tile]);

  SmallVector<TileLoadOp> streamed;
  DenseSet<int64_t> streamedBuffers;
  for (Operation &inner : op.getBody()->getOperations())
    if (auto load = dyn_cast<TileLoadOp>(&inner)) {
      TileLayout &l = layout(load.getTile());
      if (l.placement == Placement::Shared && streamedBuffers.insert(l.buffer).second)
        streamed.push_back(load);
    }
  int64_t stages = streamed.empty() ? 1 : buffers[layout(streamed[0].getTile()).buffer].stages;
  bool atoms = llvm::any_of(streamed, [&](TileLoadOp load) {
    return buffers[layout(load.getTile()).buffer].atoms;
  });
  if (!streamed.empty()) {
    // Prologue: the first stages - 1 blocks, one group each; then everything loaded before
    // the loop (one group older at least) is complete.
    Value token;
    for (int64_t s = 0; s + 1 < stages; ++s)
      token = issueStreamed(op, streamed, g->add(lb, g->mul(step, g->idx(s))), g->idx(s));
    g->waitGroups(token, stages - 1);
    g->barrier();
    groupsCompleted = groupsIssued;
    hoistFragments(op, static_cast<int64_t>(init.size()));
  }

  auto loop = scf::ForOp::create(b, loc, lb, ub, step, init);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value iv = loop.getInductionVar();
    map.map(op.getInductionVar(), iv);
    size_t offset = 0;
    for (Value tile : carried) {
      size_t count = registers[tile].size();
      registers[tile] = SmallVector<Value>(loop.getRegionIterArgs().slice(offset, count));
      offset += count;
    }
    if (!streamed.empty()) {
      Value n = arith::DivUIOp::create(b, loc, g->sub(iv, lb), step);
      Value next = g->add(iv, g->mul(step, g->idx(stages - 1)));
      Value token = issueStreamed(op, streamed, next, g->rem(g->add(n, g->idx(stages - 1)),
                                                             stages));
      g->waitGroups(token, stages - 1);
      if (atoms)
        g->fenceAsyncProxy();
      g->barrier();
      Value stage = g->rem(n, stages);
      for (int64_t index : streamedBuffers)
        buffers[index].stage = stage;
    }
    if (failed(lowerBlock(*op.getBody())))
      return failure();
    if (!streamed.empty())
      g->barrier(); // the next iteration's copies overwrite the buffer read here
    SmallVector<Value> yielded;
    for (Value tile : carried)
      yielded.append(registers[tile]);
    scf::YieldOp::create(b, loc, yielded);
  }
  size_t offset = 0;
  for (Value tile : carried) {
    size_t count = registers[tile].size();
    registers[tile] = SmallVector<Value>(loop.getResults().slice(offset, count));
    offset += count;
  }
  if (!streamed.empty()) {
    // Drain the zero-fill copies still in flight.
    g->waitGroups(g->commit({}), 0);
    hoisted.clear();
  }
  return success();
}

LogicalResult KernelLowering::lowerIf(scf::IfOp op) {
  if (op.getNumResults() != 0)
    return op.emitError("GPU lowering: an scf.if with results in a tile kernel");
  SmallVector<Value> carried = registerTilesWrittenIn(op);
  SmallVector<Type> types;
  for (Value tile : carried)
    types.append(registers[tile].size(), b.getF32Type());
  auto branch = scf::IfOp::create(b, loc, types, mapped(op.getCondition()),
                                  /*withElseRegion=*/true);
  auto saved = registers;
  auto lowerRegion = [&](Region &from, Block &to) -> LogicalResult {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&to);
    if (!from.empty() && failed(lowerBlock(from.front())))
      return failure();
    SmallVector<Value> yielded;
    for (Value tile : carried)
      yielded.append(registers[tile]);
    scf::YieldOp::create(b, loc, yielded);
    registers = saved;
    return success();
  };
  if (failed(lowerRegion(op.getThenRegion(), branch.getThenRegion().front())) ||
      failed(lowerRegion(op.getElseRegion(), branch.getElseRegion().front())))
    return failure();
  size_t offset = 0;
  for (Value tile : carried) {
    size_t count = registers[tile].size();
    registers[tile] = SmallVector<Value>(branch.getResults().slice(offset, count));
    offset += count;
  }
  return success();
}

// ----- memory -----

void KernelLowering::waitForBuffer(SharedBuffer &buffer) {
  if (buffer.streamed || buffer.lastGroup < groupsCompleted)
    return;
  g->waitGroups(lastToken, 0);
  g->barrier();
  groupsCompleted = groupsIssued;
}

LogicalResult KernelLowering::lowerLoad(TileLoadOp op) {
  TileLayout &l = layout(op.getTile());
  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value start = mapped(op.getStart()), count = mapped(op.getCount());
  if (l.placement == Placement::Shared) {
    SharedBuffer &buffer = buffers[l.buffer];
    if (buffer.streamed || buffer.lastGroup >= 0)
      return success(); // issued by the loop's pipeline, or the same rows already copied
    auto tokens = g->copyTile(mapped(op.getSource()), batch, head, start, g->add(start, count),
                              buffer.view, Value(), buffer.rows, buffer.width, buffer.atoms);
    lastToken = g->commit(tokens);
    buffer.lastGroup = groupsIssued++;
    return success();
  }
  if (l.placement != Placement::Vector)
    return op.emitError("GPU lowering: a loaded register matrix");
  // Row statistics straight from global memory: rows past `count` read the last valid row
  // and are zeroed.
  Value multiplier =
      op.getMultiplier() ? g->f32(op.getMultiplier()->convertToDouble()) : Value();
  Value last =
      arith::MaxSIOp::create(b, loc, g->sub(g->add(start, count), g->idx(1)), g->idx(0));
  SmallVector<Value> values;
  int64_t n = registerCount(l);
  for (int64_t j = 0; j < n; ++j) {
    Value offsetInTile = l.transposed ? g->accumulatorColumn(g->idx(0), j / 2, j % 2)
                                      : g->accumulatorRow(warpRow, 2 * j);
    Value row = g->add(start, offsetInTile);
    Value read = arith::MinSIOp::create(b, loc, row, last);
    Value value = memref::LoadOp::create(b, loc, mapped(op.getSource()),
                                         ValueRange{batch, head, read});
    if (multiplier)
      value = g->fmul(value, multiplier);
    values.push_back(g->select(g->lt(offsetInTile, count), value, g->f32(0.0)));
  }
  registers[op.getTile()] = values;
  return success();
}

LogicalResult KernelLowering::lowerStore(TileStoreOp op) {
  TileLayout &l = layout(op.getTile());
  if (l.placement == Placement::Shared || l.transposed)
    return op.emitError("GPU lowering: only row-distributed register tiles can be stored");
  auto values = valuesOf(op, op.getTile());
  if (failed(values))
    return failure();
  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value start = mapped(op.getStart());
  Value limit = g->add(start, mapped(op.getCount()));
  Value dest = mapped(op.getDest());
  double multiplier = op.getMultiplier() ? op.getMultiplier()->convertToDouble() : 1.0;
  SmallVector<Value> rowScale;
  if (op.getRowScale()) {
    auto scale = valuesOf(op, op.getRowScale());
    if (failed(scale))
      return failure();
    rowScale.assign(scale->begin(), scale->end());
  }
  if (multiplier != 1.0) {
    if (rowScale.empty())
      rowScale.assign(2, g->f32(multiplier));
    else
      for (Value &v : rowScale)
        v = g->fmul(v, g->f32(multiplier));
  }
  if (l.placement == Placement::Matrix) {
    g->storeAccumulator(*values, l.shape[1] / 8, dest, batch, head, g->add(start, warpRow),
                        limit, rowScale);
    return success();
  }
  // A row vector: lane 0 of each quad writes its two rows.
  for (int64_t half = 0; half < 2; ++half) {
    Value row = g->add(start, g->accumulatorRow(warpRow, 2 * half));
    Value writes = g->andI(g->lt(row, limit),
                           arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, g->quad,
                                                 g->idx(0)));
    Value value = (*values)[half];
    if (!rowScale.empty())
      value = g->fmul(value, rowScale[half]);
    scf::IfOp::create(b, loc, writes, [&](OpBuilder &, Location) {
      memref::StoreOp::create(b, loc, value, dest, ValueRange{batch, head, row});
      scf::YieldOp::create(b, loc);
    });
  }
  return success();
}

// ----- products -----


} // namespace gpu_lowering

namespace {
using namespace gpu_lowering;

gpu::GPUModuleOp kernelModule(ModuleOp module, StringRef kernelName, OpBuilder &b) {
  StringRef base = kernelName;
  for (StringRef suffix : {"_fwd", "_bwd_dq", "_bwd_dkdv"})
    if (base.ends_with(suffix)) {
      base = base.drop_back(suffix.size());
      break;
    }
  std::string name = (base + "_kernels").str();
  if (auto existing = module.lookupSymbol<gpu::GPUModuleOp>(name))
    return existing;
  b.setInsertionPointToEnd(module.getBody());
  return gpu::GPUModuleOp::create(b, module.getLoc(), name);
}

struct AttnLowerTilesGpuPass : impl::AttnLowerTilesGpuBase<AttnLowerTilesGpuPass> {
  using AttnLowerTilesGpuBase::AttnLowerTilesGpuBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *context = &getContext();
    LoweringOptions lowering;
    if (elementType == "bf16")
      lowering.element = BFloat16Type::get(context);
    else if (elementType == "f16")
      lowering.element = Float16Type::get(context);
    else {
      module.emitError("attn-lower-tiles-gpu: element-type must be bf16 or f16, got '")
          << elementType << "'";
      return signalPassFailure();
    }
    lowering.stages = stages;
    lowering.wgmma = wgmma;
    lowering.fragmentBudget = fragmentRegisters;
    if (stages < 2) {
      module.emitError("attn-lower-tiles-gpu: stages must be at least 2, got ") << stages;
      return signalPassFailure();
    }

    SmallVector<func::FuncOp> kernels;
    for (auto function : module.getOps<func::FuncOp>()) {
      StringRef name = function.getName();
      if (!function.isExternal() && (name.ends_with("_fwd") || name.ends_with("_bwd_dq") ||
                                     name.ends_with("_bwd_dkdv")))
        kernels.push_back(function);
    }
    // Forward, dQ, dK/dV, then delta, whatever order the tile passes emitted them in.
    auto rank = [](func::FuncOp function) {
      StringRef name = function.getName();
      return name.ends_with("_fwd") ? 0 : name.ends_with("_bwd_dq") ? 1 : 2;
    };
    llvm::stable_sort(kernels, [&](func::FuncOp a, func::FuncOp b) { return rank(a) < rank(b); });
    OpBuilder builder(context);
    SmallVector<std::function<void()>> deltaKernels;
    for (func::FuncOp function : kernels) {
      KernelLowering kernel(function, lowering);
      if (failed(kernel.analyze()))
        return signalPassFailure();
      gpu::GPUModuleOp target = kernelModule(module, function.getName(), builder);
      if (failed(kernel.emit(target)))
        return signalPassFailure();
      if (kernel.needsRowDelta) {
        std::string name =
            function.getName().drop_back(StringRef("_bwd_dq").size()).str() + "_bwd_delta";
        Type element = lowering.element;
        int64_t valueHeadDim = kernel.valueHeadDim, warps = kernel.warps;
        Location loc = function.getLoc();
        deltaKernels.push_back([=, &builder] {
          emitRowDeltaKernel(builder, loc, target, name, element, valueHeadDim, warps);
        });
      }
      function.erase();
    }
    for (auto &emitDelta : deltaKernels)
      emitDelta();
    if (!kernels.empty())
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), UnitAttr::get(context));
  }
};
} // namespace
} // namespace mlir::attn
