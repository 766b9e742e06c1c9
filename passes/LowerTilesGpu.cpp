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
#include "dialects/attn/AttnDialect.h"
#include "passes/GpuFragments.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/EquivalenceClasses.h"
#include "llvm/ADT/SetVector.h"

#include <cmath>
#include <functional>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERTILESGPU
#include "passes/Passes.h.inc"

namespace {
using namespace gpu_fragments;

enum class Placement { Shared, Matrix, Vector };

struct TileLayout {
  Placement placement = Placement::Matrix;
  /// Matrix: fragment rows are the tile's columns. Vector: one value per fragment column.
  bool transposed = false;
  int64_t buffer = -1;           // Shared: index into the kernel's buffers
  bool loadedTransposed = false; // Shared: the tile is the transpose of the stored rows
  double multiplier = 1.0;       // Shared: tile_load's multiplier, applied to the products
  SmallVector<int64_t, 2> shape;
};

struct SharedBuffer {
  int64_t rows = 0, width = 0; // stored as the global rows: rows x width elements
  bool streamed = false;       // loaded inside a loop: `stages` copies
  bool atoms = false;          // wgmma operand: [width / 64][rows][64] swizzle atoms
  int64_t stages = 1;
  int64_t offset = 0; // bytes into the dynamic shared memory
  Value view;
  Value stage;            // the buffer read in the current loop iteration
  int64_t lastGroup = -1; // cp.async group of its last load outside a streamed loop
};

/// Tiles an op writes (placement decides which of them are registers).
SmallVector<Value> writtenTiles(Operation *op) {
  if (auto fill = dyn_cast<TileFillOp>(op))
    return {fill.getTile()};
  if (auto load = dyn_cast<TileLoadOp>(op))
    return {load.getTile()};
  if (auto matmul = dyn_cast<TileMatmulOp>(op))
    return {matmul.getAcc()};
  if (auto mask = dyn_cast<TileMaskOp>(op))
    return {mask.getScores()};
  if (auto mod = dyn_cast<TileScoreModOp>(op)) {
    SmallVector<Value> out{mod.getScores()};
    if (mod.getDerivative())
      out.push_back(mod.getDerivative());
    return out;
  }
  if (auto init = dyn_cast<TileRowInitOp>(op))
    return SmallVector<Value>(init.getState());
  if (auto normalize = dyn_cast<TileNormalizeOp>(op)) {
    SmallVector<Value> out{normalize.getScores()};
    out.append(normalize.getState().begin(), normalize.getState().end());
    if (normalize.getCorrection())
      out.push_back(normalize.getCorrection());
    return out;
  }
  if (auto finalize = dyn_cast<TileRowFinalizeOp>(op))
    return {finalize.getFactor(), finalize.getLse()};
  if (auto probabilities = dyn_cast<TileProbabilitiesOp>(op))
    return {probabilities.getProbs()};
  if (auto gradient = dyn_cast<TileScoreGradientOp>(op))
    return {gradient.getGrads()};
  return {};
}

/// Tiles an elementwise op relates position by position (they share a fragment orientation).
SmallVector<Value> elementwiseGroup(Operation *op) {
  SmallVector<Value> group;
  auto add = [&](Value v) {
    if (v)
      group.push_back(v);
  };
  if (auto mod = dyn_cast<TileScoreModOp>(op)) {
    add(mod.getScores());
    add(mod.getDerivative());
  } else if (auto normalize = dyn_cast<TileNormalizeOp>(op)) {
    add(normalize.getScores());
    for (Value v : normalize.getState())
      add(v);
    add(normalize.getCorrection());
  } else if (auto finalize = dyn_cast<TileRowFinalizeOp>(op)) {
    for (Value v : finalize.getState())
      add(v);
    add(finalize.getFactor());
    add(finalize.getLse());
  } else if (auto init = dyn_cast<TileRowInitOp>(op)) {
    for (Value v : init.getState())
      add(v);
  } else if (auto probabilities = dyn_cast<TileProbabilitiesOp>(op)) {
    add(probabilities.getScores());
    add(probabilities.getLse());
    add(probabilities.getProbs());
  } else if (auto gradient = dyn_cast<TileScoreGradientOp>(op)) {
    add(gradient.getScores());
    add(gradient.getProbs());
    add(gradient.getGrads());
    add(gradient.getRowTerm());
    add(gradient.getDerivative());
  } else if (auto matmul = dyn_cast<TileMatmulOp>(op)) {
    add(matmul.getAcc());
    add(matmul.getRowScale());
  } else if (auto store = dyn_cast<TileStoreOp>(op)) {
    add(store.getTile());
    add(store.getRowScale());
  }
  return group;
}

/// Whether the value `build` emits from constants folds to 0: the formula is emitted into a
/// scratch function and folded.
bool foldsToZero(Location loc, function_ref<FailureOr<Value>(OpBuilder &)> build) {
  MLIRContext *context = loc.getContext();
  OpBuilder b(context);
  OwningOpRef<ModuleOp> scratch = ModuleOp::create(loc);
  b.setInsertionPointToStart(scratch->getBody());
  auto function = func::FuncOp::create(b, loc, "probe", b.getFunctionType({}, {b.getF32Type()}));
  b.setInsertionPointToStart(function.addEntryBlock());
  FailureOr<Value> value = build(b);
  if (failed(value))
    return false;
  func::ReturnOp::create(b, loc, *value);
  (void)applyPatternsGreedily(function, FrozenRewritePatternSet(RewritePatternSet(context)));
  auto ret = cast<func::ReturnOp>(function.getBody().front().getTerminator());
  FloatAttr folded;
  return matchPattern(ret.getOperand(0), m_Constant(&folded)) && folded.getValue().isZero();
}

Value f32Constant(OpBuilder &b, Location loc, float value) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
}

/// Whether the normalizer's probability is 0 at s = -inf by itself (exp2(-inf), sigmoid(-inf),
/// max(-inf, 0)): then a masked score needs no select after it.
bool probabilityVanishesAtNegativeInfinity(NormalizerAttrInterface normalizer, Region &body,
                                           Location loc) {
  return foldsToZero(loc, [&](OpBuilder &b) -> FailureOr<Value> {
    return normalizer.emitFastProbability(b, loc, f32Constant(b, loc, -INFINITY),
                                          f32Constant(b, loc, 1.0f), body);
  });
}

/// Whether dS is 0 at s = -inf (where p = 0) for every finite dP and row term. dS is linear in
/// (dP, row term), so two probes, (1, 0) and (0, 1), decide it.
bool gradientVanishesAtNegativeInfinity(NormalizerAttrInterface normalizer, Region &body,
                                        bool rowWise, Location loc) {
  auto probe = [&](float gradProb, float rowTerm) {
    return foldsToZero(loc, [&](OpBuilder &b) {
      return normalizer.emitScoreGradient(
          b, loc, f32Constant(b, loc, -INFINITY), f32Constant(b, loc, 0.0f),
          f32Constant(b, loc, gradProb), rowWise ? f32Constant(b, loc, rowTerm) : Value(),
          f32Constant(b, loc, 1.0f), body);
    });
  };
  return probe(1.0f, 0.0f) && (!rowWise || probe(0.0f, 1.0f));
}

struct LoweringOptions {
  Type element;
  int64_t stages = 2;
  bool wgmma = false;
  int64_t fragmentBudget = 128;
};

/// Lowers one tile kernel (a func.func of attn-tile / attn-derive-backward) to a gpu.func.
class KernelLowering {
public:
  KernelLowering(func::FuncOp source, LoweringOptions options)
      : source(source), options(options), b(source.getContext()), loc(source.getLoc()) {}

  LogicalResult analyze();
  LogicalResult emit(gpu::GPUModuleOp module);

  int64_t warps = 0, blockRows = 0;
  bool needsRowDelta = false;
  int64_t valueHeadDim = 0;

private:
  // ----- analysis -----
  bool isTile(Value v) const { return layouts.count(v); }
  TileLayout &layout(Value v) { return layouts.find(v)->second; }
  int64_t registerCount(const TileLayout &l) const;

  // ----- emission -----
  LogicalResult lowerBlock(Block &block);
  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerFor(scf::ForOp op);
  LogicalResult lowerIf(scf::IfOp op);
  LogicalResult lowerLoad(TileLoadOp op);
  LogicalResult lowerStore(TileStoreOp op);
  LogicalResult lowerMatmul(TileMatmulOp op);
  LogicalResult lowerMask(TileMaskOp op);
  LogicalResult lowerScoreMod(TileScoreModOp op);
  LogicalResult lowerNormalize(TileNormalizeOp op);
  LogicalResult lowerRowFinalize(TileRowFinalizeOp op);
  LogicalResult lowerProbabilities(TileProbabilitiesOp op);
  LogicalResult lowerScoreGradient(TileScoreGradientOp op);

  Value mapped(Value v) { return map.lookupOrDefault(v); }
  FailureOr<ArrayRef<Value>> valuesOf(Operation *op, Value tile);
  SmallVector<Value> registerTilesWrittenIn(Operation *op);
  Value materialize(Value v, scf::ForOp loop, IRMapping &shifted);
  Value issueStreamed(scf::ForOp loop, ArrayRef<TileLoadOp> loads, Value iv, Value stage);
  void waitForBuffer(SharedBuffer &buffer);
  void hoistFragments(scf::ForOp loop, int64_t carried);
  SmallVector<SmallVector<Value, 4>> rowMajorA(int64_t bufferIndex, int64_t kSteps);

  /// (tile row, tile column) of register `i` of a matrix with layout `l`.
  std::pair<Value, Value> position(const TileLayout &l, int64_t i);
  /// The value of vector tile `vector` that belongs to register `i` of a matrix of layout `l`.
  Value rowValue(ArrayRef<Value> vector, const TileLayout &l, int64_t i) {
    return l.transposed ? vector[2 * (i / 4) + i % 2] : vector[(i % 4) / 2];
  }
  Value zeroWhereMasked(Value value, Value score) {
    Value masked = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, score,
                                         g->f32(-INFINITY));
    return arith::SelectOp::create(b, loc, masked, g->f32(0.0), value);
  }

  func::FuncOp source;
  LoweringOptions options;
  OpBuilder b;
  Location loc;
  std::optional<FragmentBuilder> g;
  DenseMap<Value, TileLayout> layouts;
  SmallVector<SharedBuffer> buffers;
  DenseSet<Operation *> wgmmaProducts;
  IRMapping map;
  DenseMap<Value, SmallVector<Value>> registers;
  DenseMap<int64_t, SmallVector<SmallVector<Value, 4>>> hoisted;
  Value warpRow;
  int64_t groupsIssued = 0, groupsCompleted = 0;
  Value lastToken;
};

int64_t KernelLowering::registerCount(const TileLayout &l) const {
  if (l.placement == Placement::Vector)
    return l.transposed ? l.shape[0] / 4 : 2;
  int64_t columns = l.transposed ? l.shape[0] : l.shape[1];
  return 4 * (columns / 8);
}

LogicalResult KernelLowering::analyze() {
  StringRef name = source.getName();
  bool forward = name.ends_with("_fwd");
  // Tiles: the kernel's static f32 allocations.
  source.walk([&](Operation *op) {
    if (!isa<memref::AllocaOp, memref::AllocOp>(op))
      return;
    auto type = cast<MemRefType>(op->getResult(0).getType());
    TileLayout l;
    l.shape.assign(type.getShape().begin(), type.getShape().end());
    l.placement = type.getRank() == 1 ? Placement::Vector : Placement::Matrix;
    layouts[op->getResult(0)] = l;
  });
  // Operands: 2-D tiles only tile_load writes live in shared memory, one buffer per distinct
  // (source, batch, head, start, count) in one block.
  DenseMap<Value, SmallVector<Operation *>> writers;
  source.walk([&](Operation *op) {
    for (Value tile : writtenTiles(op))
      writers[tile].push_back(op);
  });
  for (auto &[tile, l] : layouts) {
    if (l.placement != Placement::Matrix)
      continue;
    auto &ops = writers[tile];
    if (ops.empty() || !llvm::all_of(ops, [](Operation *op) { return isa<TileLoadOp>(op); }))
      continue;
    if (ops.size() != 1)
      return source.emitError("GPU lowering: a shared operand tile is loaded in more than one "
                              "place");
    l.placement = Placement::Shared;
  }
  SmallVector<TileLoadOp> sharedLoads;
  source.walk([&](TileLoadOp load) {
    if (layout(load.getTile()).placement == Placement::Shared)
      sharedLoads.push_back(load);
  });
  for (TileLoadOp load : sharedLoads) {
    TileLayout &l = layout(load.getTile());
    l.loadedTransposed = load.getTranspose();
    l.multiplier = load.getMultiplier() ? load.getMultiplier()->convertToDouble() : 1.0;
    int64_t rows = l.loadedTransposed ? l.shape[1] : l.shape[0];
    int64_t width = l.loadedTransposed ? l.shape[0] : l.shape[1];
    for (auto [index, other] : llvm::enumerate(sharedLoads)) {
      if (other == load)
        break;
      if (other->getBlock() == load->getBlock() && other.getSource() == load.getSource() &&
          other.getBatch() == load.getBatch() && other.getHead() == load.getHead() &&
          other.getStart() == load.getStart() && other.getCount() == load.getCount()) {
        l.buffer = layout(other.getTile()).buffer;
        break;
      }
    }
    if (l.buffer < 0) {
      SharedBuffer buffer;
      buffer.rows = rows;
      buffer.width = width;
      buffer.streamed = isa<scf::ForOp>(load->getParentOp());
      l.buffer = buffers.size();
      buffers.push_back(buffer);
    }
    SharedBuffer &buffer = buffers[l.buffer];
    if (buffer.rows != rows || buffer.width != width)
      return load.emitError("GPU lowering: loads of the same rows into tiles of other shapes");
    if (width % 16 != 0 || width < 16 || width > 256)
      return load.emitError("GPU kernels need head dims that are multiples of 16 in "
                            "[16, 256], got ")
             << width;
  }

  // Orientation: a tile read as the transposed lhs of a product is held transposed, and so
  // is every tile related to it position by position.
  llvm::EquivalenceClasses<Value> classes;
  SmallVector<Value> transposedRoots;
  LogicalResult status = success();
  source.walk([&](Operation *op) {
    SmallVector<Value> group;
    for (Value v : elementwiseGroup(op))
      if (isTile(v) && layout(v).placement != Placement::Shared)
        group.push_back(v);
    for (Value v : group)
      classes.insert(v);
    for (size_t i = 1; i < group.size(); ++i)
      classes.unionSets(group[0], group[i]);
    if (auto matmul = dyn_cast<TileMatmulOp>(op))
      if (matmul.getTransposeLhs()) {
        if (layout(matmul.getLhs()).placement != Placement::Matrix) {
          status = matmul.emitError("GPU lowering: a transposed lhs must be a register tile");
          return;
        }
        transposedRoots.push_back(matmul.getLhs());
      }
  });
  if (failed(status))
    return failure();
  for (Value root : transposedRoots) {
    classes.insert(root);
    for (Value member : classes.members(root))
      layout(member).transposed = true;
  }

  // Rows per CTA: every register matrix has 16 rows per warp on its distributed side.
  for (auto &[tile, l] : layouts) {
    if (l.placement != Placement::Matrix)
      continue;
    int64_t distributed = l.transposed ? l.shape[1] : l.shape[0];
    int64_t columns = l.transposed ? l.shape[0] : l.shape[1];
    if (blockRows == 0)
      blockRows = distributed;
    if (distributed != blockRows || distributed % 16 != 0 || columns % 16 != 0)
      return source.emitError("GPU lowering: register tiles need 16 rows per warp and "
                              "columns in multiples of 16, got ")
             << l.shape[0] << "x" << l.shape[1];
  }
  for (auto &[tile, l] : layouts)
    if (l.placement == Placement::Vector &&
        (l.transposed ? l.shape[0] % 16 != 0 : l.shape[0] != blockRows))
      return source.emitError("GPU lowering: a row tile of ") << l.shape[0]
             << " does not match the fragments";
  warps = blockRows / 16;
  if (warps < 1 || warps > 16)
    return source.emitError("GPU tiles need 1-16 warps, got ") << blockRows << " rows";

  // wgmma: the forward's S = Q K^T with both operands in shared memory.
  if (options.wgmma && forward) {
    source.walk([&](TileMatmulOp matmul) {
      TileLayout &lhs = layout(matmul.getLhs()), &rhs = layout(matmul.getRhs());
      TileLayout &acc = layout(matmul.getAcc());
      if (lhs.placement != Placement::Shared || rhs.placement != Placement::Shared ||
          acc.transposed || lhs.loadedTransposed || !rhs.loadedTransposed)
        return;
      int64_t depth = lhs.shape[1], columns = acc.shape[1];
      if (warps % 4 != 0 || depth % kAtomColumns != 0 || columns > 256 || columns % 8 != 0) {
        status = matmul.emitError("wgmma needs whole warpgroups (warps % 4 == 0), a head dim "
                                  "that is a multiple of 64 and a key tile of at most 256, "
                                  "got warps = ")
                 << warps << ", D = " << depth << ", key tile = " << columns;
        return;
      }
      wgmmaProducts.insert(matmul);
      buffers[lhs.buffer].atoms = true;
      buffers[rhs.buffer].atoms = true;
    });
    if (failed(status))
      return failure();
  }

  int64_t threads = 32 * warps;
  int64_t stages = forward ? options.stages : 2;
  for (SharedBuffer &buffer : buffers) {
    buffer.stages = buffer.streamed ? stages : 1;
    if ((buffer.rows * buffer.width / kChunk) % threads != 0)
      return source.emitError("a ") << buffer.rows << "x" << buffer.width
                                    << " tile does not split into 16-byte copies over "
                                    << threads << " threads";
  }

  // Row-wise backward: the dQ kernel's module also gets the delta kernel.
  if (name.ends_with("_bwd_dq")) {
    source.walk([&](TileProbabilitiesOp op) {
      if (op.getLse())
        needsRowDelta = true;
    });
    source.walk([&](TileLoadOp load) {
      if (load.getSource() == source.getArgument(3))
        valueHeadDim = layout(load.getTile()).shape[1];
    });
  }
  return success();
}

std::pair<Value, Value> KernelLowering::position(const TileLayout &l, int64_t i) {
  Value fragmentRow = g->accumulatorRow(warpRow, i % 4);
  Value fragmentColumn = g->accumulatorColumn(g->idx(0), i / 4, i % 4);
  if (l.transposed)
    return {fragmentColumn, fragmentRow};
  return {fragmentRow, fragmentColumn};
}

FailureOr<ArrayRef<Value>> KernelLowering::valuesOf(Operation *op, Value tile) {
  auto it = registers.find(tile);
  if (it == registers.end())
    return op->emitError("GPU lowering: a register tile is read before it is written");
  return ArrayRef<Value>(it->second);
}

SmallVector<Value> KernelLowering::registerTilesWrittenIn(Operation *op) {
  llvm::SetVector<Value> tiles;
  op->walk([&](Operation *inner) {
    for (Value tile : writtenTiles(inner))
      if (isTile(tile) && layout(tile).placement != Placement::Shared &&
          registers.count(tile))
        tiles.insert(tile);
  });
  return tiles.takeVector();
}

LogicalResult KernelLowering::emit(gpu::GPUModuleOp module) {
  StringRef name = source.getName();
  bool keyBlocks = name.ends_with("_bwd_dkdv");
  // Views: rank-4 f32 views become views of the storage type; rank-3 ones (lse, delta) stay f32.
  SmallVector<Type> arguments;
  unsigned viewCount = source.getNumArguments() - 3;
  for (unsigned i = 0; i < viewCount; ++i) {
    auto type = cast<MemRefType>(source.getArgument(i).getType());
    arguments.push_back(type.getRank() == 4 ? globalView(options.element, 4)
                                            : globalView(b.getF32Type(), 3));
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
    Value start = materialize(load.getStart(), loop, shifted);
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
    hoisted[l.buffer] = rowMajorA(l.buffer, kSteps);
  }
}

SmallVector<SmallVector<Value, 4>> KernelLowering::rowMajorA(int64_t bufferIndex,
                                                             int64_t kSteps) {
  auto it = hoisted.find(bufferIndex);
  if (it != hoisted.end())
    return it->second;
  SharedBuffer &buffer = buffers[bufferIndex];
  SmallVector<SmallVector<Value, 4>> fragments;
  for (int64_t kk = 0; kk < kSteps; ++kk)
    fragments.push_back(
        g->loadRowMajorA(buffer.view, buffer.stage, warpRow, kk, buffer.width / kChunk));
  return fragments;
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

LogicalResult KernelLowering::lowerMatmul(TileMatmulOp op) {
  TileLayout &acc = layout(op.getAcc()), &lhs = layout(op.getLhs()), &rhs = layout(op.getRhs());
  if (acc.placement != Placement::Matrix)
    return op.emitError("GPU lowering: a product into a shared tile");
  double factor = (op.getAlpha() ? op.getAlpha()->convertToDouble() : 1.0);
  if (lhs.placement == Placement::Shared)
    factor *= lhs.multiplier;
  if (rhs.placement == Placement::Shared)
    factor *= rhs.multiplier;
  for (TileLayout *operand : {&lhs, &rhs})
    if (operand->placement == Placement::Shared)
      waitForBuffer(buffers[operand->buffer]);

  int64_t depth = op.getTransposeLhs() ? lhs.shape[0] : lhs.shape[1];
  int64_t columns = acc.transposed ? acc.shape[0] : acc.shape[1];
  int64_t nTiles = columns / 8, kSteps = depth / 16;
  SmallVector<Value> target;
  if (op.getAccumulate()) {
    auto old = valuesOf(op, op.getAcc());
    if (failed(old))
      return failure();
    target.assign(old->begin(), old->end());
    if (op.getRowScale()) {
      auto scale = valuesOf(op, op.getRowScale());
      if (failed(scale))
        return failure();
      for (size_t i = 0; i < target.size(); ++i)
        target[i] = g->fmul(target[i], rowValue(*scale, acc, i));
    }
  }
  bool direct = factor == 1.0 && op.getAccumulate();
  SmallVector<Value> product = direct ? target : g->zeros(4 * nTiles);

  if (wgmmaProducts.contains(op)) {
    SharedBuffer &queries = buffers[lhs.buffer], &keys = buffers[rhs.buffer];
    int64_t keyBytes = keys.rows * keys.width * options.element.getIntOrFloatBitWidth() / 8;
    Value keyAddress = g->sharedAddress(keys.view);
    if (keys.stage)
      keyAddress = arith::AddIOp::create(
          b, loc, keyAddress,
          arith::IndexCastOp::create(b, loc, b.getI64Type(),
                                     g->mul(keys.stage, g->idx(keyBytes))));
    Value warpgroupRow = g->mul(g->div(g->warp, 4), g->idx(64));
    product = g->warpgroupMatmul(g->sharedAddress(queries.view), queries.rows, warpgroupRow,
                                 keyAddress, keys.rows, depth);
    if (direct)
      for (size_t i = 0; i < product.size(); ++i)
        product[i] = g->fadd(product[i], target[i]);
  } else if (!acc.transposed && lhs.placement == Placement::Matrix) {
    // A from the registers of an earlier product (P, dS): C layout of two n-tiles = A layout.
    if (lhs.transposed != op.getTransposeLhs() || rhs.placement != Placement::Shared)
      return op.emitError("GPU lowering: unsupported operand layouts of a product");
    auto a = valuesOf(op, op.getLhs());
    if (failed(a))
      return failure();
    SharedBuffer &buffer = buffers[rhs.buffer];
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      auto aRegs = g->accumulatorAsA(*a, kk);
      for (int64_t np = 0; np < nTiles / 2; ++np) {
        auto bRegs = rhs.loadedTransposed
                         ? g->loadTransposedB(buffer.view, buffer.stage, g->idx(16 * np), kk,
                                              buffer.width / kChunk)
                         : g->loadRowMajorB(buffer.view, buffer.stage, g->idx(16 * kk), 2 * np,
                                            buffer.width / kChunk);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t tile = 2 * np + half;
          auto d = g->mma(aRegs, bRegs[2 * half], bRegs[2 * half + 1],
                          ArrayRef<Value>(product).slice(4 * tile, 4));
          std::copy(d.begin(), d.end(), product.begin() + 4 * tile);
        }
      }
    }
  } else {
    // Both operands in shared memory. C = A B with A's rows on the warps, or, for a
    // transposed C, C^T = B^T A^T with B^T's rows (the keys) on the warps.
    if (lhs.placement != Placement::Shared || rhs.placement != Placement::Shared ||
        op.getTransposeLhs() || lhs.loadedTransposed ||
        (acc.transposed && !rhs.loadedTransposed))
      return op.emitError("GPU lowering: unsupported operand layouts of a product");
    TileLayout &aLayout = acc.transposed ? rhs : lhs;
    TileLayout &bLayout = acc.transposed ? lhs : rhs;
    SharedBuffer &bBuffer = buffers[bLayout.buffer];
    bool bStoredTransposed = acc.transposed ? true : rhs.loadedTransposed;
    // Fragments read once before the loop are used as they are; otherwise the k-steps go
    // outermost so that one A fragment (4 registers) is alive at a time, not all of them.
    auto found = hoisted.find(aLayout.buffer);
    SharedBuffer &aBuffer = buffers[aLayout.buffer];
    SmallVector<Value, 4> aRegs;
    for (int64_t kk = 0; kk < kSteps; ++kk)
      for (int64_t np = 0; np < nTiles / 2; ++np) {
        if (found != hoisted.end())
          aRegs = found->second[kk];
        else if (np == 0)
          aRegs = g->loadRowMajorA(aBuffer.view, aBuffer.stage, warpRow, kk,
                                   aBuffer.width / kChunk);
        auto bRegs = bStoredTransposed
                         ? g->loadTransposedB(bBuffer.view, bBuffer.stage, g->idx(16 * np), kk,
                                              bBuffer.width / kChunk)
                         : g->loadRowMajorB(bBuffer.view, bBuffer.stage, g->idx(16 * kk),
                                            2 * np, bBuffer.width / kChunk);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t tile = 2 * np + half;
          auto d = g->mma(aRegs, bRegs[2 * half], bRegs[2 * half + 1],
                          ArrayRef<Value>(product).slice(4 * tile, 4));
          std::copy(d.begin(), d.end(), product.begin() + 4 * tile);
        }
      }
  }
  if (!direct) {
    Value f = g->f32(factor);
    for (size_t i = 0; i < product.size(); ++i) {
      Value scaled = factor == 1.0 ? product[i] : g->fmul(product[i], f);
      product[i] = op.getAccumulate() ? g->fadd(target[i], scaled) : scaled;
    }
  }
  registers[op.getAcc()] = product;
  return success();
}

// ----- elementwise tile work, per register at its fragment position -----

LogicalResult KernelLowering::lowerMask(TileMaskOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  Value queryLength = mapped(op.getQueryLength()), keyLength = mapped(op.getKeyLength());
  std::optional<int64_t> window = op.getWindow();
  SmallVector<Value> out;
  for (size_t i = 0; i < scores->size(); ++i) {
    auto [r, c] = position(l, i);
    Value row = g->add(rowStart, r), key = g->add(colStart, c);
    // Row `row` may see keys [lo, hi); a padding row sees none.
    Value lo = window ? g->sub(row, g->idx(*window)) : g->idx(0);
    Value hi = keyLength;
    if (op.getCausal())
      hi = arith::MinSIOp::create(b, loc, hi, g->add(row, g->idx(1)));
    else if (window)
      hi = arith::MinSIOp::create(b, loc, hi, g->add(row, g->idx(*window + 1)));
    Value allowed = g->andI(g->lt(row, queryLength),
                            g->andI(g->le(lo, key), g->lt(key, hi)));
    out.push_back(g->select(allowed, (*scores)[i], g->f32(-INFINITY)));
  }
  registers[op.getScores()] = out;
  return success();
}

LogicalResult KernelLowering::lowerScoreMod(TileScoreModOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  Value batch = mapped(op.getBatch()), head = mapped(op.getHead());
  Value rowStart = mapped(op.getRowStart()), colStart = mapped(op.getColStart());
  double multiplier = op.getMultiplier().convertToDouble();
  SmallVector<Value> out, derivative;
  for (size_t i = 0; i < scores->size(); ++i) {
    auto [r, c] = position(l, i);
    SmallVector<Value> args{(*scores)[i], batch, head, g->add(rowStart, r),
                            g->add(colStart, c)};
    Value value;
    if (op.getDerivative()) {
      auto both = emitRegionWithDerivative(b, loc, op.getScoreMod(), args);
      if (failed(both))
        return failure();
      value = both->first;
      derivative.push_back(both->second);
    } else {
      value = inlineScalarRegion(b, op.getScoreMod(), args);
    }
    if (multiplier != 1.0)
      value = g->fmul(value, g->f32(multiplier));
    out.push_back(value);
  }
  registers[op.getScores()] = out;
  if (op.getDerivative())
    registers[op.getDerivative()] = derivative;
  return success();
}

LogicalResult KernelLowering::lowerNormalize(TileNormalizeOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  NormalizerAttrInterface normalizer = op.getNormalizer();
  Region &body = op.getNormalizerBody();
  Value keyLength = mapped(op.getKeyLength());
  SmallVector<Value> s(*scores);
  // Masked scores are -inf; most normalizers map them to 0 by themselves (and the row shift
  // stays finite), so the select is kept only for those that do not.
  bool vanishes = probabilityVanishesAtNegativeInfinity(normalizer, body, loc);
  auto probability = [&](Value score, Value shifted) {
    Value p = normalizer.emitFastProbability(b, loc, shifted, keyLength, body);
    return vanishes ? p : zeroWhereMasked(p, score);
  };
  if (!normalizer.isRowWise()) {
    for (Value &value : s)
      value = probability(value, value);
    registers[op.getScores()] = s;
    return success();
  }
  if (l.transposed)
    return op.emitError("GPU lowering: a row-wise normalizer over a transposed tile");
  unsigned stateSize = normalizer.getRowStateSize();
  SmallVector<SmallVector<Value>> state(2);
  for (Value tile : op.getState()) {
    auto values = valuesOf(op, tile);
    if (failed(values))
      return failure();
    for (int64_t half = 0; half < 2; ++half)
      state[half].push_back((*values)[half]);
  }
  SmallVector<SmallVector<Value>> nextState(stateSize);
  SmallVector<Value> correction;
  for (int64_t half = 0; half < 2; ++half) {
    Value blockMax;
    for (size_t i = 0; i < s.size(); ++i)
      if ((i % 4) / 2 == static_cast<size_t>(half))
        blockMax = blockMax ? g->fmax(blockMax, s[i]) : s[i];
    blockMax = g->quadReduce(blockMax, /*isMax=*/true);
    // {new state..., shift of the block's scores, correction of the accumulator}.
    SmallVector<Value> shifted = normalizer.emitRowShift(b, loc, state[half], blockMax);
    if (shifted.size() != stateSize + 2)
      return op.emitError("normalizer's emitRowShift returned ")
             << shifted.size() << " values, expected " << stateSize + 2;
    Value shift = shifted[stateSize], rowCorrection = shifted[stateSize + 1];
    shifted.truncate(stateSize);
    Value blockSum;
    for (size_t i = 0; i < s.size(); ++i)
      if ((i % 4) / 2 == static_cast<size_t>(half)) {
        s[i] = probability(s[i], g->fsub(s[i], shift));
        blockSum = blockSum ? g->fadd(blockSum, s[i]) : s[i];
      }
    // The state is opaque, so no entry of it can stay a per-thread partial sum: the block's
    // sum is reduced across the quad here and every thread carries its rows' full state.
    blockSum = g->quadReduce(blockSum, /*isMax=*/false);
    SmallVector<Value> next =
        normalizer.emitRowAccumulate(b, loc, shifted, rowCorrection, blockSum);
    if (next.size() != stateSize)
      return op.emitError("normalizer's emitRowAccumulate returned ")
             << next.size() << " values, expected " << stateSize;
    for (unsigned k = 0; k < stateSize; ++k)
      nextState[k].push_back(next[k]);
    correction.push_back(rowCorrection);
  }
  registers[op.getScores()] = s;
  for (auto [k, tile] : llvm::enumerate(op.getState()))
    registers[tile] = nextState[k];
  if (op.getCorrection())
    registers[op.getCorrection()] = correction;
  return success();
}

LogicalResult KernelLowering::lowerRowFinalize(TileRowFinalizeOp op) {
  SmallVector<Value> factors, lses;
  for (int64_t half = 0; half < 2; ++half) {
    SmallVector<Value> state;
    for (Value tile : op.getState()) {
      auto values = valuesOf(op, tile);
      if (failed(values))
        return failure();
      state.push_back((*values)[half]);
    }
    auto [factor, lse] = op.getNormalizer().emitRowFinalize(b, loc, state);
    if (!factor || !lse)
      return op.emitError("normalizer's emitRowFinalize returned no factor or LSE");
    factors.push_back(factor);
    lses.push_back(lse);
  }
  registers[op.getFactor()] = factors;
  registers[op.getLse()] = lses;
  return success();
}

LogicalResult KernelLowering::lowerProbabilities(TileProbabilitiesOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  if (failed(scores))
    return failure();
  ArrayRef<Value> lse;
  if (op.getLse()) {
    auto values = valuesOf(op, op.getLse());
    if (failed(values))
      return failure();
    lse = *values;
  }
  Value keyLength = mapped(op.getKeyLength());
  SmallVector<Value> probs;
  for (size_t i = 0; i < scores->size(); ++i) {
    Value s = (*scores)[i];
    Value p = op.getNormalizer().emitBackwardProbability(
        b, loc, s, lse.empty() ? Value() : rowValue(lse, l, i), keyLength,
        op.getNormalizerBody(), /*fast=*/true);
    // Masked (-inf): p = 0 (a row-wise p is NaN in a row with no allowed key: lse = -inf).
    probs.push_back(zeroWhereMasked(p, s));
  }
  registers[op.getProbs()] = probs;
  return success();
}

LogicalResult KernelLowering::lowerScoreGradient(TileScoreGradientOp op) {
  TileLayout &l = layout(op.getScores());
  auto scores = valuesOf(op, op.getScores());
  auto probs = valuesOf(op, op.getProbs());
  auto grads = valuesOf(op, op.getGrads());
  if (failed(scores) || failed(probs) || failed(grads))
    return failure();
  ArrayRef<Value> rowTerm, derivative;
  if (op.getRowTerm()) {
    auto values = valuesOf(op, op.getRowTerm());
    if (failed(values))
      return failure();
    rowTerm = *values;
  }
  if (op.getDerivative()) {
    auto values = valuesOf(op, op.getDerivative());
    if (failed(values))
      return failure();
    derivative = *values;
  }
  Value keyLength = mapped(op.getKeyLength());
  // Masked (-inf): dS = 0. The select is left out where the formula gives 0 there by itself
  // (p = 0 at masked scores), unless a score_mod's derivative multiplies it.
  bool vanishes = derivative.empty() &&
                  gradientVanishesAtNegativeInfinity(op.getNormalizer(), op.getNormalizerBody(),
                                                     !rowTerm.empty(), loc);
  SmallVector<Value> out;
  for (size_t i = 0; i < scores->size(); ++i) {
    Value s = (*scores)[i];
    auto gradient = op.getNormalizer().emitScoreGradient(
        b, loc, s, (*probs)[i], (*grads)[i], rowTerm.empty() ? Value() : rowValue(rowTerm, l, i),
        keyLength, op.getNormalizerBody());
    if (failed(gradient))
      return failure();
    Value value = *gradient;
    if (!derivative.empty())
      value = g->fmul(value, derivative[i]);
    out.push_back(vanishes ? value : zeroWhereMasked(value, s));
  }
  registers[op.getGrads()] = out;
  return success();
}

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
