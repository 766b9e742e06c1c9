// Fragment layouts and builders of the GPU lowering of the tile ops (attn-lower-tiles-gpu):
// thread coordinates, swizzled shared tiles filled by cp.async, ldmatrix operand fragments,
// mma.sync m16n8k16 and sm_90a wgmma. Included only by the GPU lowering's files.
//
// Fragment layouts follow PTX's m16n8k16: lane = 4 g + t; an accumulator tile holds
// (row g, cols 2t, 2t+1) and (row g + 8, cols 2t, 2t+1). Shared tiles are row-major with the
// 16-byte chunk index XOR-ed with (row mod 8) so that ldmatrix and cp.async hit distinct banks.
#ifndef PASSES_GPUFRAGMENTS_H
#define PASSES_GPUFRAGMENTS_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <algorithm>
#include <cassert>

namespace mlir::attn::gpu_fragments {
constexpr int64_t kChunk = 8; // elements per 16-byte cp.async / ldmatrix row
/// Elements per row of a 128-byte-swizzled wgmma operand atom (8 rows x 128 bytes).
constexpr int64_t kAtomColumns = 64;

/// IR builders of the GPU lowering: thread coordinates, shared-memory tiles, cp.async copies,
/// ldmatrix fragments, mma.sync and wgmma.
class FragmentBuilder {
public:
  FragmentBuilder(OpBuilder &b, Location loc, Type element, int64_t warps)
      : b(b), loc(loc), element(element), warps(warps) {}

  // ----- scalars -----
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
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
  Value f32(double v) { return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v)); }
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

  int64_t threads() const { return 32 * warps; }

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

  OpBuilder &b;
  Location loc;
  Type element;
  int64_t warps;
  Value threadId, warp, lane, group, quad;
};


/// Global memref type of q, k, v, o (and gradients): `memref<?x?x?x?xT>` with dynamic strides
/// and offset, unit last stride for 16-bit elements.
inline MemRefType globalView(Type element, int64_t rank) {
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<int64_t> strides(rank, dyn);
  if (element.isIntOrFloat() && !element.isF32())
    strides.back() = 1;
  auto layout = StridedLayoutAttr::get(element.getContext(), dyn, strides);
  return MemRefType::get(SmallVector<int64_t>(rank, dyn), element, layout);
}

/// Creates `gpu.func @name(args) kernel` at the end of `module` with its launch contract as
/// attributes and enters its body: the kernel prologue every GPU kernel shares.
inline gpu::GPUFuncOp createGpuKernel(OpBuilder &b, Location loc, gpu::GPUModuleOp module,
                                      StringRef name, ArrayRef<Type> arguments, int64_t warps,
                                      int64_t blockRows, int64_t sharedBytes, StringRef grid) {
  b.setInsertionPointToEnd(module.getBody());
  auto kernel = gpu::GPUFuncOp::create(b, loc, name, b.getFunctionType(arguments, {}));
  kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  int32_t threads = static_cast<int32_t>(32 * warps);
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

/// `@<name>_bwd_delta(o, dO, delta)`: delta = rowsum(dO * O) in f32, the row term of row-wise
/// normalizers' gradients. One thread per row; grid (ceil(Sq/threads), Hq, B). Defined in
/// GpuRowDelta.cpp.
void emitRowDeltaKernel(OpBuilder &b, Location loc, gpu::GPUModuleOp module, StringRef name,
                        Type element, int64_t valueHeadDim, int64_t warps);

} // namespace mlir::attn::gpu_fragments

#endif // PASSES_GPUFRAGMENTS_H
