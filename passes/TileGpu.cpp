// attn-tile-gpu: lowers attn.attention to tensor-core gpu.func kernels (the FA2 mapping).
//
// Forward, one CTA per (query block, query head, batch), 16 query rows per warp:
//   cp.async Q tile -> shared (once); K/V blocks -> `stages` shared buffers, zero-filled past Sk
//   per K/V block: S = Q K^T (ldmatrix + mma.sync m16n8k16, f32 accumulators)
//                  normalizer in registers (interface); row-wise: quad-shuffle max/sum, the
//                  normalizer's row update, rescale
//                  O += P V   (P re-used from the accumulator registers as the A operand)
//   O (and the LSE, in the normalizer's domain, for row-wise normalizers) stored with row
//   predication.
// Backward (`backward=true`): `_bwd_dq` (CTA per query block, loops over keys) and `_bwd_dkdv`
// (CTA per key block, loops over the query heads of its GQA group and over queries), both
// mma.sync with a 2-stage cp.async pipeline; P is recomputed from the LSE.
//
// Fragment layouts follow PTX's m16n8k16: lane = 4 g + t; an accumulator tile holds
// (row g, cols 2t, 2t+1) and (row g + 8, cols 2t, 2t+1). Shared tiles are row-major with the
// 16-byte chunk index XOR-ed with (row mod 8) so that ldmatrix and cp.async hit distinct banks.
#include "dialects/attn/AttnDialect.h"
#include "passes/KernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include "passes/Passes.h"

#include <cmath>
#include <limits>
#include <tuple>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILEGPU
#include "passes/Passes.h.inc"

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kChunk = 8; // elements per 16-byte cp.async / ldmatrix row

/// Shape parameters of one kernel.
struct GpuTiles {
  int64_t warps = 4;    // each warp owns 16 rows of the CTA's row block
  int64_t columns = 64; // keys (forward, dQ) or queries (dK/dV) per streamed block
  int64_t stages = 2;
  bool wgmma = false;   // forward S = Q K^T with sm_90a warpgroup MMAs
};

/// Elements per row of a 128-byte-swizzled wgmma operand atom (8 rows x 128 bytes).
constexpr int64_t kAtomColumns = 64;

/// IR emission shared by the GPU kernels: thread coordinates, shared-memory tiles, cp.async
/// copies, ldmatrix fragments and mma.sync.
class GpuEmitter {
public:
  GpuEmitter(KernelEmitter &e, Type element, GpuTiles tiles)
      : e(e), b(e.b), loc(e.loc), element(element), tiles(tiles) {}

  // ----- scalars -----
  Value idx(int64_t v) { return e.index(v); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value div(Value x, int64_t y) { return arith::DivUIOp::create(b, loc, x, idx(y)); }
  Value rem(Value x, int64_t y) { return arith::RemUIOp::create(b, loc, x, idx(y)); }
  Value lt(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, x, y);
  }
  Value le(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sle, x, y);
  }
  Value gt(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, x, y);
  }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, loc, c, x, y); }
  Value andI(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value orI(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value fadd(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value fsub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value fmul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value fmax(Value x, Value y) { return arith::MaximumFOp::create(b, loc, x, y); }
  Value f32(double v) { return e.f32(v); }
  Value boolConst(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }

  /// Thread coordinates; call once at the top of a kernel.
  void initThread() {
    Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
    threadId = tid;
    warp = div(tid, 32);
    lane = rem(tid, 32);
    group = div(lane, 4);
    quad = rem(lane, 4);
  }

  int64_t threads() const { return 32 * tiles.warps; }

  // ----- shared memory -----
  Attribute workgroup() {
    return gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  }
  /// A typed view of `shape` at `byteOffset` of the dynamic shared memory.
  Value sharedTile(Value dynamicShared, int64_t byteOffset, ArrayRef<int64_t> shape) {
    auto type = MemRefType::get(shape, element, MemRefLayoutAttrInterface{}, workgroup());
    return memref::ViewOp::create(b, loc, type, dynamicShared, idx(byteOffset), ValueRange{});
  }
  int64_t tileBytes(int64_t rows, int64_t width) const {
    return rows * width * element.getIntOrFloatBitWidth() / 8;
  }

  /// XOR swizzle of the 16-byte chunk index: rows that ldmatrix reads together land in
  /// distinct bank groups. Only within aligned groups of chunks, so the row stays in range.
  Value swizzle(Value row, Value chunk, int64_t chunks) {
    int64_t mask = chunks % 8 == 0 ? 7 : chunks % 4 == 0 ? 3 : chunks % 2 == 0 ? 1 : 0;
    if (mask == 0)
      return chunk;
    return arith::XOrIOp::create(b, loc, chunk, arith::AndIOp::create(b, loc, row, idx(mask)));
  }

  /// Issues cp.async copies of rows [firstRow, firstRow + rows) of `global[batch, head]` into
  /// the shared tile (`stage` selects the buffer of a 3-D tile). Rows at or past `rowLimit`
  /// are zero-filled without reading global memory.
  /// With `atoms`, the tile is stored as [width / 64][rows][64] (wgmma's 128-byte swizzle
  /// atoms, K-major) instead of [rows][width].
  SmallVector<Value> copyTile(Value global, Value batch, Value head, Value firstRow,
                              Value rowLimit, Value shared, Value stage, int64_t rows,
                              int64_t width, bool atoms = false) {
    int64_t chunks = width / kChunk;
    int64_t total = rows * chunks;
    SmallVector<Value> tokens;
    auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
    assert(total % threads() == 0 && "tile shapes are checked to split evenly");
    Value lastRow = arith::MaxSIOp::create(b, loc, sub(rowLimit, idx(1)), idx(0));
    for (int64_t base = 0; base < total; base += threads()) {
      Value linear = add(threadId, idx(base));
      Value row = div(linear, chunks), chunk = rem(linear, chunks);
      Value globalRow = add(firstRow, row);
      Value inside = lt(globalRow, rowLimit);
      Value readRow = arith::MinSIOp::create(b, loc, globalRow, lastRow);
      Value readCount = select(inside, idx(kChunk), idx(0));
      SmallVector<Value> dst;
      if (stage)
        dst.push_back(stage);
      if (atoms) {
        int64_t atomChunks = kAtomColumns / kChunk;
        dst.push_back(div(chunk, atomChunks));
        dst.push_back(row);
        dst.push_back(mul(swizzle(row, rem(chunk, atomChunks), atomChunks), idx(kChunk)));
      } else {
        dst.push_back(row);
        dst.push_back(mul(swizzle(row, chunk, chunks), idx(kChunk)));
      }
      Value copy = nvgpu::DeviceAsyncCopyOp::create(
          b, loc, tokenType, shared, dst, global,
          ValueRange{batch, head, readRow, mul(chunk, idx(kChunk))},
          b.getIndexAttr(kChunk), readCount, b.getUnitAttr());
      tokens.push_back(copy);
    }
    return tokens;
  }

  Value commit(ValueRange tokens) {
    return nvgpu::DeviceAsyncCreateGroupOp::create(
        b, loc, nvgpu::DeviceAsyncTokenType::get(b.getContext()), tokens);
  }
  void waitGroups(Value token, int64_t pending) {
    nvgpu::DeviceAsyncWaitOp::create(b, loc, token, b.getI32IntegerAttr(pending));
  }
  void barrier() { gpu::BarrierOp::create(b, loc); }

  // ----- fragments -----
  /// One 32-bit register of an MMA operand: two packed 16-bit elements. bf16 operands of
  /// nvvm.mma.sync are i32, f16 ones vector<2xf16>.
  Value operandRegister(Value pair) {
    if (element.isF16())
      return pair;
    Value asInt = vector::BitCastOp::create(
        b, loc, VectorType::get({1}, b.getI32Type()), pair);
    return vector::ExtractOp::create(b, loc, asInt, ArrayRef<int64_t>{0});
  }

  /// ldmatrix.x4 from shared tile row/col (per-lane address): the four 8x8 matrices become
  /// four operand registers.
  SmallVector<Value, 4> loadMatrix(Value shared, Value stage, Value row, Value chunk,
                                   int64_t chunks, bool transpose) {
    SmallVector<Value> indices;
    if (stage)
      indices.push_back(stage);
    indices.push_back(row);
    indices.push_back(mul(swizzle(row, chunk, chunks), idx(kChunk)));
    auto type = VectorType::get({4, 2}, element);
    Value matrices = nvgpu::LdMatrixOp::create(b, loc, type, shared, indices,
                                               b.getBoolAttr(transpose),
                                               b.getI32IntegerAttr(4));
    SmallVector<Value, 4> registers;
    for (int64_t i = 0; i < 4; ++i)
      registers.push_back(operandRegister(
          vector::ExtractOp::create(b, loc, matrices, ArrayRef<int64_t>{i})));
    return registers;
  }

  /// A operand (16 rows x 16 reduction) of k-step `kk` at tile rows [rowBase, rowBase + 16).
  SmallVector<Value, 4> loadRowMajorA(Value shared, Value stage, Value rowBase, int64_t kk,
                                      int64_t chunks) {
    Value row = add(rowBase, rem(lane, 16));
    Value chunk = add(idx(2 * kk), div(lane, 16));
    return loadMatrix(shared, stage, row, chunk, chunks, /*transpose=*/false);
  }
  /// B operands of two n-tiles when B^T is stored row-major (n rows, k contiguous): K in
  /// Q K^T. Returns {b0, b1} of n-tile 0 then {b0, b1} of n-tile 1.
  SmallVector<Value, 4> loadTransposedB(Value shared, Value stage, Value nBase, int64_t kk,
                                        int64_t chunks) {
    Value row = add(nBase, add(mul(div(lane, 16), idx(8)), rem(lane, 8)));
    Value chunk = add(idx(2 * kk), rem(div(lane, 8), 2));
    return loadMatrix(shared, stage, row, chunk, chunks, /*transpose=*/false);
  }
  /// B operands of two n-tiles when B is stored row-major (k rows, n contiguous): V in P V.
  /// `kBase` is the first k row, `nChunk` the first of the two 8-column chunks.
  SmallVector<Value, 4> loadRowMajorB(Value shared, Value stage, Value kBase, int64_t nChunk,
                                      int64_t chunks) {
    Value row = add(kBase, rem(lane, 16));
    Value chunk = add(idx(nChunk), div(lane, 16));
    return loadMatrix(shared, stage, row, chunk, chunks, /*transpose=*/true);
  }

  /// D = A B + C for one m16n8k16 tile; `c` and the result are 4 f32 values.
  SmallVector<Value, 4> mma(ArrayRef<Value> a, Value b0, Value b1, ArrayRef<Value> c) {
    auto f32Type = b.getF32Type();
    auto resultType = LLVM::LLVMStructType::getLiteral(
        b.getContext(), {f32Type, f32Type, f32Type, f32Type});
    NVVM::MMATypes ptxType = element.isF16() ? NVVM::MMATypes::f16 : NVVM::MMATypes::bf16;
    Value d = NVVM::MmaOp::create(
        b, loc, resultType, a, ValueRange{b0, b1}, c, ArrayRef<int64_t>{16, 8, 16},
        std::nullopt, std::nullopt, std::array<NVVM::MMATypes, 2>{ptxType, ptxType},
        std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row, NVVM::MMALayout::col});
    SmallVector<Value, 4> out;
    for (int64_t i = 0; i < 4; ++i)
      out.push_back(LLVM::ExtractValueOp::create(b, loc, d, ArrayRef<int64_t>{i}));
    return out;
  }

  /// Packs two f32 into one operand register of `element`.
  Value pack(Value x, Value y) {
    Value pair = vector::FromElementsOp::create(
        b, loc, VectorType::get({2}, b.getF32Type()), ValueRange{x, y});
    Value narrow = arith::TruncFOp::create(b, loc, VectorType::get({2}, element), pair);
    return operandRegister(narrow);
  }

  /// The A operand of k-step `kk` taken from accumulator tiles 2kk and 2kk+1 (P or dS): the
  /// C layout of two adjacent n-tiles is the A layout of one 16x16 tile.
  SmallVector<Value, 4> accumulatorAsA(ArrayRef<Value> acc, int64_t kk) {
    ArrayRef<Value> lo = acc.slice(8 * kk, 4), hi = acc.slice(8 * kk + 4, 4);
    return {pack(lo[0], lo[1]), pack(lo[2], lo[3]), pack(hi[0], hi[1]), pack(hi[2], hi[3])};
  }

  /// S (+)= A B over `kSteps` where A comes from `aFragments` and B^T is the row-major shared
  /// tile; `nTiles` n-tiles of 8 starting at tile row `nBase`.
  SmallVector<Value> matmulTransposedB(ArrayRef<SmallVector<Value, 4>> aFragments,
                                       Value shared, Value stage, Value nBase, int64_t nTiles,
                                       int64_t chunks, SmallVector<Value> acc) {
    for (int64_t np = 0; np < nTiles / 2; ++np)
      for (size_t kk = 0; kk < aFragments.size(); ++kk) {
        auto bRegs = loadTransposedB(shared, stage, add(nBase, idx(16 * np)), kk, chunks);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t tile = 2 * np + half;
          auto d = mma(aFragments[kk], bRegs[2 * half], bRegs[2 * half + 1],
                       ArrayRef<Value>(acc).slice(4 * tile, 4));
          std::copy(d.begin(), d.end(), acc.begin() + 4 * tile);
        }
      }
    return acc;
  }

  /// acc (+)= A B where A is taken from accumulator tiles `aAcc` (k = its columns) and B is
  /// the row-major shared tile whose rows are the k index; `nTiles` output n-tiles.
  SmallVector<Value> matmulAccumulatorA(ArrayRef<Value> aAcc, Value shared, Value stage,
                                        Value kBase, int64_t kSteps, int64_t nTiles,
                                        int64_t chunks, SmallVector<Value> acc) {
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      auto a = accumulatorAsA(aAcc, kk);
      for (int64_t np = 0; np < nTiles / 2; ++np) {
        auto bRegs = loadRowMajorB(shared, stage, add(kBase, idx(16 * kk)), 2 * np, chunks);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t tile = 2 * np + half;
          auto d = mma(a, bRegs[2 * half], bRegs[2 * half + 1],
                       ArrayRef<Value>(acc).slice(4 * tile, 4));
          std::copy(d.begin(), d.end(), acc.begin() + 4 * tile);
        }
      }
    }
    return acc;
  }

  SmallVector<Value> zeros(int64_t count) { return SmallVector<Value>(count, f32(0.0)); }

  /// Row (0 or 1 for g, g + 8) and column of accumulator register `r` of n-tile `tile`,
  /// relative to the warp's 16-row slab and the block's first column.
  Value accumulatorRow(Value rowBase, int64_t r) {
    return add(rowBase, add(group, idx(8 * (r / 2))));
  }
  Value accumulatorColumn(Value columnBase, int64_t tile, int64_t r) {
    return add(columnBase, add(mul(quad, idx(2)), idx(8 * tile + r % 2)));
  }

  /// Reduces a per-thread value over the four lanes that share an accumulator row.
  Value quadReduce(Value value, bool isMax) {
    for (int32_t offset : {1, 2}) {
      auto shuffle = gpu::ShuffleOp::create(b, loc, value, offset, 32, gpu::ShuffleMode::XOR);
      value = isMax ? fmax(value, shuffle.getShuffleResult())
                    : fadd(value, shuffle.getShuffleResult());
    }
    return value;
  }

  /// Stores accumulator tiles (rows g, g + 8 of the warp slab) to global[batch, head, row, :]
  /// as packed pairs, skipping rows at or past `rowLimit`; each value is multiplied by
  /// `rowScale[half]` when given.
  void storeAccumulator(ArrayRef<Value> acc, int64_t nTiles, Value global, Value batch,
                        Value head, Value rowBase, Value rowLimit, ArrayRef<Value> rowScale) {
    for (int64_t half = 0; half < 2; ++half) {
      Value row = accumulatorRow(rowBase, 2 * half);
      scf::IfOp::create(b, loc, lt(row, rowLimit), [&](OpBuilder &, Location) {
        for (int64_t tile = 0; tile < nTiles; ++tile) {
          Value x = acc[4 * tile + 2 * half], y = acc[4 * tile + 2 * half + 1];
          if (!rowScale.empty()) {
            x = fmul(x, rowScale[half]);
            y = fmul(y, rowScale[half]);
          }
          Value pair = vector::FromElementsOp::create(
              b, loc, VectorType::get({2}, b.getF32Type()), ValueRange{x, y});
          Value narrow = arith::TruncFOp::create(b, loc, VectorType::get({2}, element), pair);
          Value column = accumulatorColumn(idx(0), tile, 0);
          vector::StoreOp::create(b, loc, narrow, global, ValueRange{batch, head, row, column});
        }
        scf::YieldOp::create(b, loc);
      });
    }
  }

  /// Whether key `key` is visible from query `row` under the causal/window masks and the key
  /// length.
  Value visible(Value row, Value key, Value keyLength) {
    Value ok = lt(key, keyLength);
    if (e.causal)
      ok = andI(ok, le(key, row));
    if (e.window) {
      ok = andI(ok, le(sub(row, idx(*e.window)), key));
      if (!e.causal)
        ok = andI(ok, le(key, add(row, idx(*e.window))));
    }
    return ok;
  }

  /// Whether a (rows [rowLo, rowHi] x keys [keyLo, keyLo + columns)) block may hold a masked
  /// pair: only boundary blocks pay for the per-element masks.
  Value blockNeedsMask(Value rowLo, Value rowHi, Value keyLo, int64_t columns,
                       Value keyLength) {
    Value keyHi = add(keyLo, idx(columns - 1));
    Value needs = gt(add(keyLo, idx(columns)), keyLength);
    if (e.causal)
      needs = orI(needs, gt(keyHi, rowLo));
    if (e.window) {
      needs = orI(needs, lt(keyLo, sub(rowHi, idx(*e.window))));
      if (!e.causal)
        needs = orI(needs, gt(keyHi, add(rowLo, idx(*e.window))));
    }
    return needs;
  }

  /// Replaces masked entries by `fill` when `needsMask` holds. `rowOf(r)`/`keyOf(tile, r)`
  /// give the coordinates of each register.
  SmallVector<Value> applyMask(ArrayRef<Value> values, Value needsMask,
                               function_ref<Value(int64_t, int64_t)> rowOf,
                               function_ref<Value(int64_t, int64_t)> keyOf, Value keyLength,
                               double fill) {
    SmallVector<Type> types(values.size(), b.getF32Type());
    auto ifOp = scf::IfOp::create(b, loc, types, needsMask, /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(&ifOp.getThenRegion().front());
      SmallVector<Value> masked;
      Value fillValue = f32(fill);
      for (size_t i = 0; i < values.size(); ++i) {
        int64_t tile = i / 4, r = i % 4;
        masked.push_back(
            select(visible(rowOf(tile, r), keyOf(tile, r), keyLength), values[i], fillValue));
      }
      scf::YieldOp::create(b, loc, masked);
      b.setInsertionPointToStart(&ifOp.getElseRegion().front());
      scf::YieldOp::create(b, loc, values);
    }
    return SmallVector<Value>(ifOp.getResults());
  }

  /// The key blocks a block of query rows [rowLo, rowHi] visits (causal/window block
  /// skipping): the first key, rounded down to a block boundary, and the number of blocks.
  std::pair<Value, Value> keyBlocks(Value rowLo, Value rowHi, Value keyLength, int64_t columns) {
    Value first = e.keyRangeForRow(rowLo, idx(0), keyLength).first;
    Value end = e.keyRangeForRow(rowHi, idx(0), keyLength).second;
    first = mul(div(first, columns), idx(columns));
    Value count = e.maxIndex(
        idx(0), arith::DivSIOp::create(b, loc, add(sub(end, first), idx(columns - 1)),
                                       idx(columns)));
    return {first, count};
  }

  /// Issues the cp.async copies of K/V block `n` (rows first + n * columns) into buffer
  /// n mod stages, as one group; blocks at or past `blocks` are zero-filled without reads,
  /// which keeps the number of groups in flight uniform.
  Value streamKeyValueBlock(Value n, Value first, Value blocks, Value keyLength, Value batch,
                            Value kvHead, Value k, Value v, Value kTiles, Value vTiles,
                            int64_t columns) {
    Value stage = rem(n, tiles.stages);
    Value start = add(first, mul(n, idx(columns)));
    Value limit = select(lt(n, blocks), keyLength, idx(0));
    auto tokens = copyTile(k, batch, kvHead, start, limit, kTiles, stage, columns, e.headDim,
                           tiles.wgmma);
    auto more = copyTile(v, batch, kvHead, start, limit, vTiles, stage, columns,
                         e.valueHeadDim);
    tokens.append(more.begin(), more.end());
    return commit(tokens);
  }

  // ----- sm_90a warpgroup MMA -----
  /// The shared-window byte address of a shared memref's first element, as i64.
  Value sharedAddress(Value shared) {
    Value address = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, shared);
    return arith::IndexCastOp::create(b, loc, b.getI64Type(), address);
  }

  /// A wgmma shared-memory matrix descriptor for a K-major operand in 128-byte-swizzled atoms
  /// starting at byte address `address`: 8-row groups 1024 bytes apart (stride byte offset),
  /// the leading byte offset unused (1), layout type 1 = 128-byte swizzle.
  Value matrixDescriptor(Value address) {
    auto i64 = b.getI64Type();
    auto constant = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
    };
    Value start = arith::AndIOp::create(
        b, loc, arith::ShRUIOp::create(b, loc, address, constant(4)), constant(0x3fff));
    int64_t fixed = (int64_t(1) << 16) | (int64_t(1024 >> 4) << 32) | (int64_t(1) << 62);
    (void)i64;
    return arith::OrIOp::create(b, loc, start, constant(fixed));
  }

  /// S = A B^T for this warp's warpgroup: A is `aRows` x K at `aAddress` (its 64 rows start
  /// at row `aRow0`), B^T is `nRows` x K at `bAddress`, both [K/64][rows][64] atoms. Returns the
  /// accumulator registers in the mma.sync C layout (n-tile j: registers 4j..4j+3).
  SmallVector<Value> warpgroupMatmul(Value aAddress, int64_t aRows, Value aRow0,
                                     Value bAddress, int64_t nRows, int64_t reduction) {
    MLIRContext *context = b.getContext();
    int64_t count = nRows / 2; // f32 accumulators per thread of an m64 x nRows tile
    auto f32Type = b.getF32Type();
    auto structType =
        LLVM::LLVMStructType::getLiteral(context, SmallVector<Type>(count, f32Type));
    auto i64 = [&](Value index) -> Value {
      return arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
    };
    auto bytes = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
    };
    Value aBase = arith::AddIOp::create(
        b, loc, aAddress,
        arith::MulIOp::create(b, loc, i64(aRow0), bytes(kAtomColumns * 2)));
    NVVM::WgmmaFenceAlignedOp::create(b, loc);
    Value acc = LLVM::UndefOp::create(b, loc, structType);
    NVVM::WGMMATypes type = element.isF16() ? NVVM::WGMMATypes::f16 : NVVM::WGMMATypes::bf16;
    for (int64_t kk = 0; kk < reduction / 16; ++kk) {
      // k16 steps advance 32 bytes inside an atom; every 4 steps move to the next atom.
      int64_t atom = kk / 4, inAtom = (kk % 4) * 32;
      Value aStep = arith::AddIOp::create(b, loc, aBase,
                                          bytes(atom * aRows * kAtomColumns * 2 + inAtom));
      Value bStep = arith::AddIOp::create(b, loc, bAddress,
                                          bytes(atom * nRows * kAtomColumns * 2 + inAtom));
      acc = NVVM::WgmmaMmaAsyncOp::create(
          b, loc, structType, acc, matrixDescriptor(aStep), matrixDescriptor(bStep),
          NVVM::MMAShapeAttr::get(context, 64, nRows, 16), type, type,
          NVVM::WGMMATypes::f32,
          kk == 0 ? NVVM::WGMMAScaleOut::zero : NVVM::WGMMAScaleOut::one,
          NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one, NVVM::MMALayout::row,
          NVVM::MMALayout::col, NVVM::MMAIntOverflowAttr());
    }
    NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
    NVVM::WgmmaWaitGroupSyncOp::create(b, loc, b.getI64IntegerAttr(0));
    SmallVector<Value> out;
    for (int64_t i = 0; i < count; ++i)
      out.push_back(LLVM::ExtractValueOp::create(b, loc, acc, ArrayRef<int64_t>{i}));
    return out;
  }

  /// Makes this thread's cp.async writes visible to the async proxy wgmma reads through.
  void fenceAsyncProxy() {
    NVVM::FenceProxyOp::create(
        b, loc, NVVM::ProxyKindAttr::get(b.getContext(), NVVM::ProxyKind::async_shared),
        NVVM::SharedSpaceAttr::get(b.getContext(), NVVM::SharedSpace::shared_cta));
  }

  KernelEmitter &e;
  OpBuilder &b;
  Location loc;
  Type element;
  GpuTiles tiles;
  Value threadId, warp, lane, group, quad;
};

/// Global memref type of q, k, v, o (and gradients): `memref<?x?x?x?xT>` with dynamic strides
/// and offset, unit last stride.
MemRefType globalView(Type element, int64_t rank) {
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<int64_t> strides(rank, dyn);
  if (element.isIntOrFloat() && !element.isF32())
    strides.back() = 1;
  auto layout = StridedLayoutAttr::get(element.getContext(), dyn, strides);
  return MemRefType::get(SmallVector<int64_t>(rank, dyn), element, layout);
}

/// Creates `gpu.func @name(args) kernel` at the end of `module` and enters its body.
gpu::GPUFuncOp createGpuKernel(OpBuilder &b, Location loc, gpu::GPUModuleOp module,
                               StringRef name, ArrayRef<Type> arguments, GpuTiles tiles,
                               int64_t blockRows, int64_t sharedBytes, StringRef grid) {
  b.setInsertionPointToEnd(module.getBody());
  auto kernel = gpu::GPUFuncOp::create(b, loc, name, b.getFunctionType(arguments, {}));
  kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  int32_t threads = static_cast<int32_t>(32 * tiles.warps);
  kernel.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({threads, 1, 1}));
  kernel->setAttr("attn.block_rows", b.getI64IntegerAttr(blockRows));
  kernel->setAttr("attn.threads", b.getI64IntegerAttr(threads));
  kernel->setAttr("attn.dynamic_shared_memory", b.getI64IntegerAttr(sharedBytes));
  kernel->setAttr("attn.grid", b.getStringAttr(grid));
  // Without an occupancy hint ptxas caps these 128-thread kernels at 128 registers and spills;
  // one resident CTA per SM is the contract, more come from the register count itself.
  kernel->setAttr("nvvm.minctasm", b.getI32IntegerAttr(1));
  b.setInsertionPointToStart(&kernel.getBody().front());
  return kernel;
}

/// The forward kernel `@<name>_fwd(q, k, v, o, lse)`.
LogicalResult emitForward(KernelEmitter &e, gpu::GPUModuleOp module, Type element,
                          GpuTiles tiles) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  int64_t d = e.headDim, dv = e.valueHeadDim, bn = tiles.columns, bm = 16 * tiles.warps;
  int64_t stages = tiles.stages;
  GpuEmitter g(e, element, tiles);
  int64_t qBytes = g.tileBytes(bm, d), kBytes = g.tileBytes(bn, d), vBytes = g.tileBytes(bn, dv);
  bool wgmma = tiles.wgmma;
  // wgmma's swizzled operands need 1024-byte-aligned atoms: room to align the base.
  int64_t sharedBytes = qBytes + stages * (kBytes + vBytes) + (wgmma ? 1024 : 0);
  MemRefType view4 = globalView(element, 4), lseType = globalView(b.getF32Type(), 3);
  auto kernel = createGpuKernel(b, loc, module, kernelBaseName(e.op) + "_fwd",
                                {view4, view4, view4, view4, lseType}, tiles, bm, sharedBytes,
                                "query_blocks,query_heads,batch");
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], o = args[3], lse = args[4];
  g.initThread();
  Value batch = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value queryStart = g.mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x), g.idx(bm));
  Value queryLength = e.dim(q, 2), keyLength = e.dim(k, 2);
  Value kvHead = e.kvHeadOf(head, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);

  auto sharedType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                    MemRefLayoutAttrInterface{}, g.workgroup());
  Value shared = gpu::DynamicSharedMemoryOp::create(b, loc, sharedType);
  Value qTile, kTiles, vTiles;
  if (wgmma) {
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, shared);
    Value pad = g.rem(g.sub(g.idx(1024), g.rem(base, 1024)), 1024);
    auto view = [&](int64_t offset, ArrayRef<int64_t> shape) -> Value {
      auto type = MemRefType::get(shape, element, MemRefLayoutAttrInterface{}, g.workgroup());
      return memref::ViewOp::create(b, loc, type, shared, g.add(pad, g.idx(offset)),
                                    ValueRange{});
    };
    qTile = view(0, {d / kAtomColumns, bm, kAtomColumns});
    kTiles = view(qBytes, {stages, d / kAtomColumns, bn, kAtomColumns});
    vTiles = view(qBytes + stages * kBytes, {stages, bn, dv});
  } else {
    qTile = g.sharedTile(shared, 0, {bm, d});
    kTiles = g.sharedTile(shared, qBytes, {stages, bn, d});
    vTiles = g.sharedTile(shared, qBytes + stages * kBytes, {stages, bn, dv});
  }

  // Keys any row of the block may see, rounded down to a block boundary (block skipping).
  Value lastRow = g.sub(e.minIndex(g.add(queryStart, g.idx(bm)), queryLength), g.idx(1));
  Value keyLo, blocks;
  std::tie(keyLo, blocks) = g.keyBlocks(queryStart, lastRow, keyLength, bn);
  auto issueBlock = [&](Value n) {
    return g.streamKeyValueBlock(n, keyLo, blocks, keyLength, batch, kvHead, k, v, kTiles,
                                 vTiles, bn);
  };

  // Prologue: Q, then the first stages - 1 K/V blocks, each its own group.
  Value token = g.commit(g.copyTile(q, batch, head, queryStart, queryLength, qTile, Value(),
                                    bm, d, wgmma));
  for (int64_t s = 0; s + 1 < stages; ++s)
    token = issueBlock(g.idx(s));
  g.waitGroups(token, stages - 1);
  g.barrier();
  Value warpRow = g.mul(g.warp, g.idx(16));
  SmallVector<SmallVector<Value, 4>> queryFragments;
  if (!wgmma)
    for (int64_t kk = 0; kk < d / 16; ++kk)
      queryFragments.push_back(g.loadRowMajorA(qTile, Value(), warpRow, kk, d / kChunk));
  // Scores are in the normalizer's domain (getScoreMultiplier) already when the scale could be
  // folded.
  Value multiplier = g.f32(e.queryMultiplier());

  int64_t outputValues = 4 * (dv / 8), scoreValues = 4 * (bn / 8);
  // Row-wise: the normalizer's row state of rows g and g + 8 (its getRowStateSize() values
  // for half 0, then for half 1) rides in the loop's iter_args after the output registers.
  // Every thread of a quad holds its rows' full state (see the per-block sum reduction below).
  int64_t stateSize = e.rowWise ? e.normalizer.getRowStateSize() : 0;
  auto wrongCount = [&](StringRef method, size_t got, int64_t expected) {
    return e.op.emitOpError() << "normalizer's " << method << " returned " << got
                              << " values, expected " << expected;
  };
  SmallVector<Value> init = g.zeros(outputValues);
  if (e.rowWise) {
    SmallVector<Value> rowInit = e.normalizer.emitRowStateInit(b, loc);
    if (static_cast<int64_t>(rowInit.size()) != stateSize)
      return wrongCount("emitRowStateInit", rowInit.size(), stateSize);
    for (int64_t half = 0; half < 2; ++half)
      init.append(rowInit.begin(), rowInit.end());
  }
  LogicalResult status = success();
  auto loop = scf::ForOp::create(b, loc, g.idx(0), blocks, g.idx(1), init);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value n = loop.getInductionVar();
    SmallVector<Value> state(loop.getRegionIterArgs());
    SmallVector<Value> out(state.begin(), state.begin() + outputValues);

    Value next = issueBlock(g.add(n, g.idx(stages - 1)));
    g.waitGroups(next, stages - 1);
    if (wgmma)
      g.fenceAsyncProxy();
    g.barrier();
    Value stage = g.rem(n, stages);
    Value blockStart = g.add(keyLo, g.mul(n, g.idx(bn)));

    SmallVector<Value> scores;
    if (wgmma) {
      // One m64 x bn x d warpgroup MMA per warpgroup, both operands from shared memory.
      Value stageOffset = arith::IndexCastOp::create(b, loc, b.getI64Type(),
                                                     g.mul(stage, g.idx(kBytes)));
      Value keyAddress =
          arith::AddIOp::create(b, loc, g.sharedAddress(kTiles), stageOffset);
      Value warpgroupRow = g.mul(g.div(g.warp, 4), g.idx(64));
      scores = g.warpgroupMatmul(g.sharedAddress(qTile), bm, warpgroupRow, keyAddress, bn, d);
    } else {
      scores = g.matmulTransposedB(queryFragments, kTiles, stage, g.idx(0), bn / 8,
                                   d / kChunk, g.zeros(scoreValues));
    }
    auto rowOf = [&](int64_t, int64_t r) {
      return g.add(queryStart, g.accumulatorRow(warpRow, r));
    };
    auto keyOf = [&](int64_t tile, int64_t r) {
      return g.accumulatorColumn(blockStart, tile, r);
    };
    for (int64_t i = 0; i < scoreValues; ++i) {
      scores[i] = g.fmul(scores[i], multiplier);
      if (e.hasScoreMod)
        scores[i] = e.score(scores[i], batch, head, rowOf(i / 4, i % 4), keyOf(i / 4, i % 4),
                            /*wantDerivative=*/false)
                        ->first;
    }
    Value needsMask = g.blockNeedsMask(queryStart, lastRow, blockStart, bn, keyLength);
    Region &body = e.op.getNormalizerBody();
    SmallVector<Value> probs;
    SmallVector<Value> carried;
    if (e.rowWise) {
      // Masked scores are -inf, as the row update expects of the block max.
      scores = g.applyMask(scores, needsMask, rowOf, keyOf, keyLength, kNegInf);
      SmallVector<Value> rowScale;
      for (int64_t half = 0; half < 2; ++half) {
        Value blockMax;
        for (int64_t i = 0; i < scoreValues; ++i)
          if ((i % 4) / 2 == half)
            blockMax = blockMax ? g.fmax(blockMax, scores[i]) : scores[i];
        blockMax = g.quadReduce(blockMax, /*isMax=*/true);
        ArrayRef<Value> rowState =
            ArrayRef<Value>(state).slice(outputValues + half * stateSize, stateSize);
        // {new state..., shift of the block's scores, correction of the accumulator}.
        SmallVector<Value> shifted = e.normalizer.emitRowShift(b, loc, rowState, blockMax);
        if (static_cast<int64_t>(shifted.size()) != stateSize + 2) {
          status = wrongCount("emitRowShift", shifted.size(), stateSize + 2);
          break;
        }
        Value shift = shifted[stateSize], correction = shifted[stateSize + 1];
        shifted.truncate(stateSize);
        Value blockSum;
        for (int64_t i = 0; i < scoreValues; ++i)
          if ((i % 4) / 2 == half) {
            scores[i] = e.zeroWhereMasked(
                e.normalizer.emitFastProbability(b, loc, g.fsub(scores[i], shift),
                                                 keyLengthF32, body),
                scores[i]);
            blockSum = blockSum ? g.fadd(blockSum, scores[i]) : scores[i];
          }
        // The state is opaque, so no entry of it can be left a per-thread partial sum to
        // reduce once after the loop: the block's sum is reduced across the quad here, two
        // shuffles per row half and block, and every thread carries its rows' full state.
        blockSum = g.quadReduce(blockSum, /*isMax=*/false);
        SmallVector<Value> next =
            e.normalizer.emitRowAccumulate(b, loc, shifted, correction, blockSum);
        if (static_cast<int64_t>(next.size()) != stateSize) {
          status = wrongCount("emitRowAccumulate", next.size(), stateSize);
          break;
        }
        carried.append(next.begin(), next.end());
        rowScale.push_back(correction);
      }
      if (failed(status)) {
        // Keep the IR well formed; the pass fails on `status`.
        scf::YieldOp::create(b, loc, state);
        return status;
      }
      for (int64_t i = 0; i < outputValues; ++i)
        out[i] = g.fmul(out[i], rowScale[(i % 4) / 2]);
      probs = scores;
    } else {
      // Elementwise: p = f(s), masked to 0; no statistics, no rescale.
      for (Value s : scores)
        probs.push_back(e.zeroWhereMasked(
            e.normalizer.emitFastProbability(b, loc, s, keyLengthF32, body), s));
      probs = g.applyMask(probs, needsMask, rowOf, keyOf, keyLength, 0.0);
    }
    out = g.matmulAccumulatorA(probs, vTiles, stage, g.idx(0), bn / 16, dv / 8, dv / kChunk,
                               out);
    g.barrier(); // the next iteration's copies overwrite this stage
    out.append(carried.begin(), carried.end());
    scf::YieldOp::create(b, loc, out);
  }
  // Drain the zero-fill copies still in flight.
  g.waitGroups(g.commit({}), 0);

  SmallVector<Value> results(loop.getResults());
  ArrayRef<Value> out = ArrayRef<Value>(results).take_front(outputValues);
  SmallVector<Value> rowScale;
  if (e.rowWise) {
    for (int64_t half = 0; half < 2; ++half) {
      // The state is already reduced across the quad: no shuffles here.
      ArrayRef<Value> rowState =
          ArrayRef<Value>(results).slice(outputValues + half * stateSize, stateSize);
      auto [factor, rowLse] = e.normalizer.emitRowFinalize(b, loc, rowState);
      if (!factor || !rowLse)
        return e.op.emitOpError() << "normalizer's emitRowFinalize returned no factor or LSE";
      rowScale.push_back(factor);
      Value row = g.add(queryStart, g.accumulatorRow(warpRow, 2 * half));
      Value writes = g.andI(g.lt(row, queryLength),
                            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, g.quad,
                                                  g.idx(0)));
      scf::IfOp::create(b, loc, writes, [&](OpBuilder &, Location) {
        memref::StoreOp::create(b, loc, rowLse, lse, ValueRange{batch, head, row});
        scf::YieldOp::create(b, loc);
      });
    }
  }
  g.storeAccumulator(out, dv / 8, o, batch, head, g.add(queryStart, warpRow), queryLength,
                     rowScale);
  gpu::ReturnOp::create(b, loc);
  return success();
}

/// Per-element backward quantities of a score tile: p and dS (w.r.t. scale * q.k).
struct TileGradient {
  SmallVector<Value> prob, gradRaw;
};

/// Recomputes P from the scores (row-wise: from the row's LSE) and derives dS from dP, both
/// through the normalizer interface; masked pairs get p = dS = 0. `rowOf`/`keyOf` map registers to
/// (query, key); `lseOf`/`deltaOf` give the row statistics of a register (row-wise only).
FailureOr<TileGradient> tileGradient(KernelEmitter &e, GpuEmitter &g, ArrayRef<Value> raw,
                                     ArrayRef<Value> gradProb, Value batch, Value head,
                                     function_ref<Value(int64_t, int64_t)> rowOf,
                                     function_ref<Value(int64_t, int64_t)> keyOf,
                                     function_ref<Value(int64_t)> lseOf,
                                     function_ref<Value(int64_t)> deltaOf, Value keyLength,
                                     Value keyLengthF32) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Region &body = e.op.getNormalizerBody();
  TileGradient out;
  Value multiplier = g.f32(e.queryMultiplier());
  for (size_t i = 0; i < raw.size(); ++i) {
    int64_t tile = i / 4, r = i % 4;
    auto scored = e.score(g.fmul(raw[i], multiplier), batch, head, rowOf(tile, r),
                          keyOf(tile, r), /*wantDerivative=*/true);
    if (failed(scored))
      return failure();
    auto [score, modDerivative] = *scored;
    Value prob = e.normalizer.emitBackwardProbability(b, loc, score, e.rowWise ? lseOf(i) : Value(),
                                                      keyLengthF32, body, /*fast=*/true);
    auto gradScore = e.normalizer.emitScoreGradient(
        b, loc, score, prob, gradProb[i], e.rowWise ? deltaOf(i) : Value(), keyLengthF32,
        body);
    if (failed(gradScore))
      return failure();
    Value gradRaw = *gradScore;
    if (modDerivative)
      gradRaw = g.fmul(gradRaw, modDerivative);
    // A score_mod's -inf: p = dS = 0 (a row-wise p is NaN in a row with no allowed key, whose
    // LSE is -inf).
    out.prob.push_back(e.zeroWhereMasked(prob, score));
    out.gradRaw.push_back(e.zeroWhereMasked(gradRaw, score));
  }
  return out;
}

/// `@<name>_bwd_dq(q, k, v, dO, lse, delta, dQ)`: one CTA per (query block, head, batch);
/// dQ = scale * sum_j dS_ij k_j, no atomics.
LogicalResult emitQueryGradient(KernelEmitter &e, gpu::GPUModuleOp module, Type element,
                                GpuTiles tiles) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  int64_t d = e.headDim, dv = e.valueHeadDim, bn = tiles.columns, bm = 16 * tiles.warps;
  int64_t stages = tiles.stages;
  GpuEmitter g(e, element, tiles);
  int64_t qBytes = g.tileBytes(bm, d), oBytes = g.tileBytes(bm, dv);
  int64_t kBytes = g.tileBytes(bn, d), vBytes = g.tileBytes(bn, dv);
  int64_t sharedBytes = qBytes + oBytes + stages * (kBytes + vBytes);
  MemRefType view4 = globalView(element, 4), rowType = globalView(b.getF32Type(), 3);
  auto kernel = createGpuKernel(b, loc, module, kernelBaseName(e.op) + "_bwd_dq",
                                {view4, view4, view4, view4, rowType, rowType, view4}, tiles,
                                bm, sharedBytes, "query_blocks,query_heads,batch");
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], gradOut = args[3], lse = args[4],
        delta = args[5], gradQuery = args[6];
  g.initThread();
  Value batch = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value queryStart = g.mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x), g.idx(bm));
  Value queryLength = e.dim(q, 2), keyLength = e.dim(k, 2);
  Value kvHead = e.kvHeadOf(head, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);

  auto sharedType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                    MemRefLayoutAttrInterface{}, g.workgroup());
  Value shared = gpu::DynamicSharedMemoryOp::create(b, loc, sharedType);
  Value qTile = g.sharedTile(shared, 0, {bm, d});
  Value oTile = g.sharedTile(shared, qBytes, {bm, dv});
  Value kTiles = g.sharedTile(shared, qBytes + oBytes, {stages, bn, d});
  Value vTiles = g.sharedTile(shared, qBytes + oBytes + stages * kBytes, {stages, bn, dv});

  Value lastRow = g.sub(e.minIndex(g.add(queryStart, g.idx(bm)), queryLength), g.idx(1));
  Value keyLo, blocks;
  std::tie(keyLo, blocks) = g.keyBlocks(queryStart, lastRow, keyLength, bn);
  auto issueBlock = [&](Value n) {
    return g.streamKeyValueBlock(n, keyLo, blocks, keyLength, batch, kvHead, k, v, kTiles,
                                 vTiles, bn);
  };
  auto tokens = g.copyTile(q, batch, head, queryStart, queryLength, qTile, Value(), bm, d);
  auto more = g.copyTile(gradOut, batch, head, queryStart, queryLength, oTile, Value(), bm, dv);
  tokens.append(more.begin(), more.end());
  Value token = g.commit(tokens);
  for (int64_t s = 0; s + 1 < stages; ++s)
    token = issueBlock(g.idx(s));
  g.waitGroups(token, stages - 1);
  g.barrier();
  Value warpRow = g.mul(g.warp, g.idx(16));
  SmallVector<SmallVector<Value, 4>> queryFragments, gradOutFragments;
  for (int64_t kk = 0; kk < d / 16; ++kk)
    queryFragments.push_back(g.loadRowMajorA(qTile, Value(), warpRow, kk, d / kChunk));
  for (int64_t kk = 0; kk < dv / 16; ++kk)
    gradOutFragments.push_back(g.loadRowMajorA(oTile, Value(), warpRow, kk, dv / kChunk));
  // Row statistics of the thread's two rows (row-wise normalizers only).
  SmallVector<Value> rowLse, rowDelta;
  if (e.rowWise)
    for (int64_t half = 0; half < 2; ++half) {
      Value row = g.add(queryStart, g.accumulatorRow(warpRow, 2 * half));
      Value readRow = e.minIndex(row, g.sub(queryLength, g.idx(1)));
      rowLse.push_back(memref::LoadOp::create(b, loc, lse, ValueRange{batch, head, readRow}));
      rowDelta.push_back(
          memref::LoadOp::create(b, loc, delta, ValueRange{batch, head, readRow}));
    }

  int64_t gradValues = 4 * (d / 8), scoreValues = 4 * (bn / 8);
  auto loop = scf::ForOp::create(b, loc, g.idx(0), blocks, g.idx(1), g.zeros(gradValues));
  LogicalResult status = success();
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value n = loop.getInductionVar();
    SmallVector<Value> acc(loop.getRegionIterArgs());
    Value next = issueBlock(g.add(n, g.idx(stages - 1)));
    g.waitGroups(next, stages - 1);
    g.barrier();
    Value stage = g.rem(n, stages);
    Value blockStart = g.add(keyLo, g.mul(n, g.idx(bn)));
    auto raw = g.matmulTransposedB(queryFragments, kTiles, stage, g.idx(0), bn / 8, d / kChunk,
                                   g.zeros(scoreValues));
    auto gradProb = g.matmulTransposedB(gradOutFragments, vTiles, stage, g.idx(0), bn / 8,
                                        dv / kChunk, g.zeros(scoreValues));
    auto rowOf = [&](int64_t, int64_t r) {
      return g.add(queryStart, g.accumulatorRow(warpRow, r));
    };
    auto keyOf = [&](int64_t tile, int64_t r) {
      return g.accumulatorColumn(blockStart, tile, r);
    };
    auto grad = tileGradient(
        e, g, raw, gradProb, batch, head, rowOf, keyOf,
        [&](int64_t i) { return rowLse.empty() ? Value() : rowLse[(i % 4) / 2]; },
        [&](int64_t i) { return rowDelta.empty() ? Value() : rowDelta[(i % 4) / 2]; },
        keyLength, keyLengthF32);
    if (failed(grad)) {
      status = failure();
      scf::YieldOp::create(b, loc, acc);
    } else {
      Value needsMask = g.blockNeedsMask(queryStart, lastRow, blockStart, bn, keyLength);
      auto gradRaw = g.applyMask(grad->gradRaw, needsMask, rowOf, keyOf, keyLength, 0.0);
      acc = g.matmulAccumulatorA(gradRaw, kTiles, stage, g.idx(0), bn / 16, d / 8, d / kChunk,
                                 acc);
      g.barrier();
      scf::YieldOp::create(b, loc, acc);
    }
  }
  g.waitGroups(g.commit({}), 0);
  SmallVector<Value> results(loop.getResults());
  Value scale = g.f32(e.scale);
  g.storeAccumulator(results, d / 8, gradQuery, batch, head, g.add(queryStart, warpRow),
                     queryLength, {scale, scale});
  gpu::ReturnOp::create(b, loc);
  return status;
}

/// `@<name>_bwd_dkdv(q, k, v, dO, lse, delta, dK, dV)`: one CTA per (key block, kv head,
/// batch), 16 keys per warp; loops over the query heads of the GQA group and their queries.
/// Works on transposed tiles: S^T = K Q^T, dV += P^T dO, dP^T = V dO^T, dK += dS^T Q.
LogicalResult emitKeyValueGradient(KernelEmitter &e, gpu::GPUModuleOp module, Type element,
                                   GpuTiles tiles) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  int64_t d = e.headDim, dv = e.valueHeadDim, bq = tiles.columns, bk = 16 * tiles.warps;
  int64_t stages = tiles.stages;
  GpuEmitter g(e, element, tiles);
  int64_t kBytes = g.tileBytes(bk, d), vBytes = g.tileBytes(bk, dv);
  int64_t qBytes = g.tileBytes(bq, d), oBytes = g.tileBytes(bq, dv);
  int64_t sharedBytes = kBytes + vBytes + stages * (qBytes + oBytes);
  MemRefType view4 = globalView(element, 4), rowType = globalView(b.getF32Type(), 3);
  auto kernel = createGpuKernel(b, loc, module, kernelBaseName(e.op) + "_bwd_dkdv",
                                {view4, view4, view4, view4, rowType, rowType, view4, view4},
                                tiles, bk, sharedBytes, "key_blocks,kv_heads,batch");
  auto args = kernel.getArguments();
  Value q = args[0], k = args[1], v = args[2], gradOut = args[3], lse = args[4],
        delta = args[5], gradKey = args[6], gradValue = args[7];
  g.initThread();
  Value batch = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value kvHead = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value keyStart = g.mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x), g.idx(bk));
  Value queryLength = e.dim(q, 2), keyLength = e.dim(k, 2);
  Value groupSize = arith::DivSIOp::create(b, loc, e.dim(q, 1), e.dim(k, 1));
  Value keyLengthF32 = e.toF32(keyLength);

  auto sharedType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                    MemRefLayoutAttrInterface{}, g.workgroup());
  Value shared = gpu::DynamicSharedMemoryOp::create(b, loc, sharedType);
  Value kTile = g.sharedTile(shared, 0, {bk, d});
  Value vTile = g.sharedTile(shared, kBytes, {bk, dv});
  Value qTiles = g.sharedTile(shared, kBytes + vBytes, {stages, bq, d});
  Value oTiles = g.sharedTile(shared, kBytes + vBytes + stages * qBytes, {stages, bq, dv});

  Value keyEnd = e.minIndex(g.add(keyStart, g.idx(bk)), keyLength);
  Value rowLo, rowHi;
  std::tie(rowLo, rowHi) = e.queryRangeForKeys(keyStart, keyEnd, queryLength);
  rowLo = g.mul(g.div(rowLo, bq), g.idx(bq));
  Value blocksPerHead = e.maxIndex(
      g.idx(0), arith::DivSIOp::create(b, loc, g.add(g.sub(rowHi, rowLo), g.idx(bq - 1)),
                                       g.idx(bq)));
  // One flat loop over (group member, query block) keeps the copy pipeline uniform.
  Value blocks = g.mul(blocksPerHead, groupSize);
  Value safeBlocksPerHead = e.maxIndex(blocksPerHead, g.idx(1));
  auto blockCoordinates = [&](Value n) {
    Value member = arith::DivSIOp::create(b, loc, n, safeBlocksPerHead);
    Value inHead = arith::RemSIOp::create(b, loc, n, safeBlocksPerHead);
    Value head = g.add(g.mul(kvHead, groupSize), member);
    return std::make_pair(head, g.add(rowLo, g.mul(inHead, g.idx(bq))));
  };
  auto issueBlock = [&](Value n) {
    Value stage = g.rem(n, stages);
    Value inRange = g.lt(n, blocks);
    auto [head, start] = blockCoordinates(g.select(inRange, n, g.idx(0)));
    Value limit = g.select(inRange, queryLength, g.idx(0));
    auto tokens = g.copyTile(q, batch, head, start, limit, qTiles, stage, bq, d);
    auto more = g.copyTile(gradOut, batch, head, start, limit, oTiles, stage, bq, dv);
    tokens.append(more.begin(), more.end());
    return g.commit(tokens);
  };
  auto tokens = g.copyTile(k, batch, kvHead, keyStart, keyLength, kTile, Value(), bk, d);
  auto more = g.copyTile(v, batch, kvHead, keyStart, keyLength, vTile, Value(), bk, dv);
  tokens.append(more.begin(), more.end());
  Value token = g.commit(tokens);
  for (int64_t s = 0; s + 1 < stages; ++s)
    token = issueBlock(g.idx(s));
  g.waitGroups(token, stages - 1);
  g.barrier();
  Value warpKey = g.mul(g.warp, g.idx(16));

  int64_t dkValues = 4 * (d / 8), dvValues = 4 * (dv / 8), scoreValues = 4 * (bq / 8);
  SmallVector<Value> init = g.zeros(dkValues + dvValues);
  auto loop = scf::ForOp::create(b, loc, g.idx(0), blocks, g.idx(1), init);
  LogicalResult status = success();
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value n = loop.getInductionVar();
    SmallVector<Value> state(loop.getRegionIterArgs());
    SmallVector<Value> dk(state.begin(), state.begin() + dkValues);
    SmallVector<Value> dvAcc(state.begin() + dkValues, state.end());
    Value next = issueBlock(g.add(n, g.idx(stages - 1)));
    g.waitGroups(next, stages - 1);
    g.barrier();
    Value stage = g.rem(n, stages);
    Value head, blockStart;
    std::tie(head, blockStart) = blockCoordinates(n);
    // K and V fragments are re-read from shared memory every block: holding them next to the
    // dK and dV accumulators would spill at D = 128.
    SmallVector<SmallVector<Value, 4>> keyFragments, valueFragments;
    for (int64_t kk = 0; kk < d / 16; ++kk)
      keyFragments.push_back(g.loadRowMajorA(kTile, Value(), warpKey, kk, d / kChunk));
    for (int64_t kk = 0; kk < dv / 16; ++kk)
      valueFragments.push_back(g.loadRowMajorA(vTile, Value(), warpKey, kk, dv / kChunk));
    // Transposed tiles: accumulator rows are keys, columns are queries.
    auto rawT = g.matmulTransposedB(keyFragments, qTiles, stage, g.idx(0), bq / 8, d / kChunk,
                                    g.zeros(scoreValues));
    auto gradProbT = g.matmulTransposedB(valueFragments, oTiles, stage, g.idx(0), bq / 8,
                                         dv / kChunk, g.zeros(scoreValues));
    auto rowOf = [&](int64_t tile, int64_t r) { return g.accumulatorColumn(blockStart, tile, r); };
    auto keyOf = [&](int64_t, int64_t r) {
      return g.add(keyStart, g.accumulatorRow(warpKey, r));
    };
    // Row statistics per query column; masked-out queries read a clamped row.
    SmallVector<Value> columnLse, columnDelta;
    if (e.rowWise)
      for (int64_t i = 0; i < scoreValues; ++i) {
        if (i % 4 >= 2) { // same queries as registers 0, 1 of the tile
          columnLse.push_back(columnLse[i - 2]);
          columnDelta.push_back(columnDelta[i - 2]);
          continue;
        }
        Value row = e.minIndex(rowOf(i / 4, i % 4), g.sub(queryLength, g.idx(1)));
        columnLse.push_back(memref::LoadOp::create(b, loc, lse, ValueRange{batch, head, row}));
        columnDelta.push_back(
            memref::LoadOp::create(b, loc, delta, ValueRange{batch, head, row}));
      }
    auto grad = tileGradient(
        e, g, rawT, gradProbT, batch, head, rowOf, keyOf,
        [&](int64_t i) { return columnLse.empty() ? Value() : columnLse[i]; },
        [&](int64_t i) { return columnDelta.empty() ? Value() : columnDelta[i]; }, keyLength,
        keyLengthF32);
    if (failed(grad)) {
      status = failure();
      scf::YieldOp::create(b, loc, state);
    } else {
      // Mask on (query, key): visible() takes the row first.
      Value lastQuery = g.add(blockStart, g.idx(bq - 1));
      Value needsMask = g.orI(g.gt(g.add(blockStart, g.idx(bq)), queryLength),
                              g.blockNeedsMask(blockStart, lastQuery, keyStart, bk, keyLength));
      SmallVector<Type> types(2 * scoreValues, b.getF32Type());
      auto ifOp = scf::IfOp::create(b, loc, types, needsMask, /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard inner(b);
        b.setInsertionPointToStart(&ifOp.getThenRegion().front());
        SmallVector<Value> masked;
        for (int64_t i = 0; i < 2 * scoreValues; ++i) {
          int64_t j = i % scoreValues;
          Value query = rowOf(j / 4, j % 4);
          Value ok = g.andI(g.visible(query, keyOf(j / 4, j % 4), keyLength),
                            g.lt(query, queryLength));
          Value value = i < scoreValues ? grad->prob[j] : grad->gradRaw[j];
          masked.push_back(g.select(ok, value, g.f32(0.0)));
        }
        scf::YieldOp::create(b, loc, masked);
        b.setInsertionPointToStart(&ifOp.getElseRegion().front());
        SmallVector<Value> plain(grad->prob);
        plain.append(grad->gradRaw.begin(), grad->gradRaw.end());
        scf::YieldOp::create(b, loc, plain);
      }
      SmallVector<Value> maskedValues(ifOp.getResults());
      ArrayRef<Value> probT = ArrayRef<Value>(maskedValues).take_front(scoreValues);
      ArrayRef<Value> gradRawT = ArrayRef<Value>(maskedValues).drop_front(scoreValues);
      dvAcc = g.matmulAccumulatorA(probT, oTiles, stage, g.idx(0), bq / 16, dv / 8,
                                   dv / kChunk, dvAcc);
      dk = g.matmulAccumulatorA(gradRawT, qTiles, stage, g.idx(0), bq / 16, d / 8, d / kChunk,
                                dk);
      g.barrier();
      dk.append(dvAcc.begin(), dvAcc.end());
      scf::YieldOp::create(b, loc, dk);
    }
  }
  g.waitGroups(g.commit({}), 0);
  SmallVector<Value> results(loop.getResults());
  Value scale = g.f32(e.scale);
  Value keyRow = g.add(keyStart, warpKey);
  g.storeAccumulator(ArrayRef<Value>(results).take_front(dkValues), d / 8, gradKey, batch,
                     kvHead, keyRow, keyLength, {scale, scale});
  g.storeAccumulator(ArrayRef<Value>(results).drop_front(dkValues), dv / 8, gradValue, batch,
                     kvHead, keyRow, keyLength, {});
  gpu::ReturnOp::create(b, loc);
  return status;
}

/// `@<name>_bwd_delta(o, dO, delta)`: delta = rowsum(dO * O) in f32, the row term of row-wise
/// normalizers' gradients. One thread per row, 16-byte loads; grid (ceil(Sq/threads), Hq, B).
void emitRowDelta(KernelEmitter &e, gpu::GPUModuleOp module, Type element, GpuTiles tiles) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  int64_t dv = e.valueHeadDim;
  GpuEmitter g(e, element, tiles);
  MemRefType view4 = globalView(element, 4), rowType = globalView(b.getF32Type(), 3);
  auto kernel = createGpuKernel(b, loc, module, kernelBaseName(e.op) + "_bwd_delta",
                                {view4, view4, rowType}, tiles, g.threads(), 0,
                                "query_blocks,query_heads,batch");
  // Memory-bound: leave the register budget to ptxas's occupancy heuristics.
  kernel->removeAttr("nvvm.minctasm");
  auto args = kernel.getArguments();
  Value o = args[0], gradOut = args[1], delta = args[2];
  g.initThread();
  Value batch = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value row = g.add(g.mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x),
                          g.idx(g.threads())),
                    g.threadId);
  scf::IfOp::create(b, loc, g.lt(row, e.dim(o, 2)), [&](OpBuilder &, Location) {
    auto chunkType = VectorType::get({kChunk}, element);
    auto wideType = VectorType::get({kChunk}, b.getF32Type());
    Value sum = e.zeros(kChunk);
    for (int64_t c = 0; c < dv; c += kChunk) {
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

/// f32 transcendental math -> one approximate PTX instruction (ex2/tanh/lg2.approx), as
/// inline asm so that no libdevice is needed.
struct ApproximateMath : RewritePattern {
  ApproximateMath(MLIRContext *context)
      : RewritePattern(MatchAnyOpTypeTag(), PatternBenefit(1), context) {}
  LogicalResult matchAndRewrite(Operation *op, PatternRewriter &rewriter) const override {
    if (op->getNumResults() != 1 || !op->getResult(0).getType().isF32())
      return failure();
    // fma is exact, not approximate, but the GPU lowering would call libdevice's __nv_fmaf.
    if (auto fma = dyn_cast<math::FmaOp>(op)) {
      rewriter.replaceOpWithNewOp<LLVM::FMAOp>(op, fma.getA(), fma.getB(), fma.getC());
      return success();
    }
    if (op->getNumOperands() != 1)
      return failure();
    Location loc = op->getLoc();
    Value x = op->getOperand(0);
    auto asm1 = [&](StringRef instruction, Value operand) -> Value {
      std::string text = (instruction + " $0, $1;").str();
      return LLVM::InlineAsmOp::create(rewriter, loc, rewriter.getF32Type(), ValueRange{operand},
                                       text, "=f,f", /*has_side_effects=*/false,
                                       /*is_align_stack=*/false,
                                       LLVM::tailcallkind::TailCallKind::None,
                                       LLVM::AsmDialectAttr(), ArrayAttr())
          .getResult(0);
    };
    auto constant = [&](double value) -> Value {
      return arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(value));
    };
    Value result;
    if (isa<math::Exp2Op>(op))
      result = asm1("ex2.approx.ftz.f32", x);
    else if (isa<math::ExpOp>(op))
      result = asm1("ex2.approx.ftz.f32",
                    arith::MulFOp::create(rewriter, loc, x, constant(M_LOG2E)));
    else if (isa<math::TanhOp>(op))
      result = asm1("tanh.approx.f32", x);
    else if (isa<math::Log2Op>(op))
      result = asm1("lg2.approx.ftz.f32", x);
    else if (isa<math::LogOp>(op))
      result = arith::MulFOp::create(rewriter, loc, asm1("lg2.approx.ftz.f32", x),
                                     constant(M_LN2));
    else
      return failure();
    rewriter.replaceOp(op, result);
    return success();
  }
};

gpu::GPUModuleOp kernelModule(ModuleOp module, AttentionOp op, OpBuilder &b) {
  std::string name = kernelBaseName(op) + "_kernels";
  if (auto existing = module.lookupSymbol<gpu::GPUModuleOp>(name))
    return existing;
  b.setInsertionPointToEnd(module.getBody());
  return gpu::GPUModuleOp::create(b, op.getLoc(), name);
}

struct AttnTileGpuPass : impl::AttnTileGpuBase<AttnTileGpuPass> {
  using AttnTileGpuBase::AttnTileGpuBase;

  /// Tile constraints, as diagnostics on the op.
  LogicalResult checkShapes(AttentionOp op, GpuTiles forward, GpuTiles backwardTiles) {
    for (int64_t dim : {op.getHeadDim(), op.getValueHeadDim()})
      if (dim % 16 != 0 || dim < 16 || dim > 256)
        return op.emitOpError("GPU kernels need head dims that are multiples of 16 in "
                              "[16, 256], got ")
               << dim;
    if (forward.wgmma &&
        (forward.warps % 4 != 0 || op.getHeadDim() % kAtomColumns != 0 ||
         forward.columns % 8 != 0 || forward.columns > 256))
      return op.emitOpError("wgmma needs whole warpgroups (warps % 4 == 0), a head dim that "
                            "is a multiple of 64 and a key tile of at most 256, got warps = ")
             << forward.warps << ", D = " << op.getHeadDim()
             << ", key tile = " << forward.columns;
    for (GpuTiles tiles : {forward, backwardTiles}) {
      if (tiles.warps < 1 || tiles.warps > 16 || tiles.stages < 2 || tiles.columns < 16 ||
          tiles.columns % 16 != 0)
        return op.emitOpError("GPU tiles need 1-16 warps, >= 2 stages and a key tile that is "
                              "a multiple of 16, got warps = ")
               << tiles.warps << ", stages = " << tiles.stages << ", key tile = "
               << tiles.columns;
      int64_t threads = 32 * tiles.warps;
      for (int64_t rows : {16 * tiles.warps, tiles.columns})
        for (int64_t dim : {op.getHeadDim(), op.getValueHeadDim()})
          if ((rows * dim / kChunk) % threads != 0)
            return op.emitOpError("a ")
                   << rows << "x" << dim << " tile does not split into 16-byte copies over "
                   << threads << " threads";
    }
    return success();
  }

  /// The option's storage type, else the op's when it is a 16-bit float, else bf16.
  Type storageType(AttentionOp op) {
    MLIRContext *context = op.getContext();
    if (elementType == "f16")
      return Float16Type::get(context);
    if (elementType == "bf16")
      return BFloat16Type::get(context);
    Type opElement = cast<ShapedType>(op.getQuery().getType()).getElementType();
    if (opElement.isF16() || opElement.isBF16())
      return opElement;
    return BFloat16Type::get(context);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *context = &getContext();
    if (!elementType.empty() && elementType != "bf16" && elementType != "f16") {
      module.emitError("attn-tile-gpu: element-type must be bf16 or f16, got '")
          << elementType << "'";
      return signalPassFailure();
    }
    GpuTiles forwardTiles{warps, keyTile, stages, wgmma};
    GpuTiles backwardTiles{backwardWarps, backwardKeyTile, 2};

    SmallVector<AttentionOp> ops;
    module.walk([&](AttentionOp op) { ops.push_back(op); });
    SetVector<Operation *> replacedFunctions;
    for (AttentionOp op : ops) {
      if (failed(KernelEmitter::checkLowerable(op)) ||
          failed(checkShapes(op, forwardTiles, backwardTiles)))
        return signalPassFailure();
      Type element = storageType(op);
      OpBuilder builder(context);
      KernelEmitter emitter(op, builder, TileSizes{16 * warps, keyTile});
      gpu::GPUModuleOp kernels = kernelModule(module, op, builder);
      if (failed(emitForward(emitter, kernels, element, forwardTiles)))
        return signalPassFailure();
      if (backward && (failed(emitQueryGradient(emitter, kernels, element, backwardTiles)) ||
                       failed(emitKeyValueGradient(emitter, kernels, element, backwardTiles))))
        return signalPassFailure();
      if (backward && emitter.rowWise)
        emitRowDelta(emitter, kernels, element, backwardTiles);
      if (auto parent = op->getParentOfType<func::FuncOp>())
        replacedFunctions.insert(parent);
    }
    for (Operation *function : replacedFunctions)
      function->erase();
    if (!ops.empty())
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), UnitAttr::get(context));

    if (fastMath) {
      RewritePatternSet patterns(context);
      patterns.add<ApproximateMath>(context);
      FrozenRewritePatternSet frozen(std::move(patterns));
      for (auto kernels : module.getOps<gpu::GPUModuleOp>()) {
        if (failed(applyPatternsGreedily(kernels, frozen)))
          return signalPassFailure();
        // Allow multiply-add contraction, as nvcc's default -fmad=true: without it the NVPTX
        // backend emits mul.rn/sub.rn, which ptxas may not fuse into fma.
        kernels.walk([&](arith::ArithFastMathInterface op) {
          op->setAttr(op.getFastMathAttrName(),
                      arith::FastMathFlagsAttr::get(context, arith::FastMathFlags::contract));
        });
      }
    }
  }
};
} // namespace
} // namespace mlir::attn
