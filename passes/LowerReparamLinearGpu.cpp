// attn-lower-reparam-linear-gpu: attn.reparam_linear → the device kernels of its GPU lowering,
// in `gpu.module @<function>_kernels`. As on the CPU (attn-lower-reparam-linear) the products
// (y = (γ/σ)·x·Wᵀ + b, dx = (γ/σ)·dy·W, G = dyᵀ·x) are the platform GEMM's (cuBLAS, alpha read
// from device memory: scales[1]); these kernels are everything around them, each a short
// memory-bound pass, in the order a host runs them:
//   forward:  matvec (t = W·u) → normalize (v) → matvec_t (s = Wᵀ·v) → power_finish (u' = s/‖s‖,
//             σ = ‖s‖²/max(‖s‖, eps) = vᵀ·W·u', scales = {σ, γ/σ}, training: u ← u') → GEMM;
//   backward: GEMMs → row_inner (⟨G_o, W_o⟩ per row) → sigma_factors (⟨G, W⟩, dγ, k) →
//             sigma_term (dW = (γ/σ)·G − k·v·u'ᵀ in place) → bias_grad (db).
// Reductions over a row or a short vector run on one warp (strided lanes, then xor shuffles).
// Each kernel carries its launch as `attn.grid` / `attn.block` ("rows", "1", "cols/128").
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERREPARAMLINEARGPU
#include "passes/Passes.h.inc"

namespace {
constexpr double kNormalizeEps = 1e-12; // torch.nn.functional.normalize's floor
constexpr int64_t kWarp = 32, kColumnBlock = 128;

class GpuReparamEmitter {
public:
  GpuReparamEmitter(OpBuilder &b, Location loc) : b(b), loc(loc), f32(b.getF32Type()) {}

  MemRefType matrix() const {
    int64_t dyn = ShapedType::kDynamic;
    return MemRefType::get({dyn, dyn}, f32, StridedLayoutAttr::get(b.getContext(), dyn, {dyn, 1}));
  }
  MemRefType vector() const { return MemRefType::get({ShapedType::kDynamic}, f32); }

  /// A kernel `name(types...)` launched on `grid` x `block` (documented on the kernel).
  gpu::GPUFuncOp kernel(gpu::GPUModuleOp module, StringRef name, ArrayRef<Type> types,
                        StringRef grid, int64_t block) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(module.getBody());
    auto function = gpu::GPUFuncOp::create(b, loc, name, b.getFunctionType(types, {}));
    function->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
    function->setAttr("attn.grid", b.getStringAttr(grid));
    function->setAttr("attn.block", b.getI64IntegerAttr(block));
    function.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({int32_t(block), 1, 1}));
    return function;
  }
  void begin(gpu::GPUFuncOp function) { b.setInsertionPointToStart(&function.front()); }
  void end() { gpu::ReturnOp::create(b, loc); }

  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value scalar(double v) { return arith::ConstantOp::create(b, loc, f32, b.getF32FloatAttr(v)); }
  Value lane() { return gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x); }
  Value blockId(gpu::Dimension d) { return gpu::BlockIdOp::create(b, loc, d); }
  Value dim(Value memref, int64_t axis) { return memref::DimOp::create(b, loc, memref, axis); }
  Value load(Value memref, ValueRange indices) {
    return memref::LoadOp::create(b, loc, memref, indices);
  }
  void store(Value value, Value memref, ValueRange indices) {
    memref::StoreOp::create(b, loc, value, memref, indices);
  }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }

  /// Σ over i = lane, lane + 32, ... < length of term(i), summed over the warp (every lane
  /// gets the total).
  Value warpSum(Value length, function_ref<Value(Value i)> term) {
    auto loop = scf::ForOp::create(
        b, loc, lane(), length, index(kWarp), ValueRange{scalar(0.0)},
        [&](OpBuilder &nested, Location, Value i, ValueRange carried) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          scf::YieldOp::create(b, loc, add(carried.front(), term(i)));
        });
    Value total = loop.getResult(0);
    for (int32_t offset = kWarp / 2; offset > 0; offset /= 2)
      total = add(total, gpu::ShuffleOp::create(b, loc, total, offset, kWarp,
                                                gpu::ShuffleMode::XOR)
                             .getShuffleResult());
    return total;
  }
  /// for (i = lane; i < length; i += 32) body(i).
  void warpFor(Value length, function_ref<void(Value i)> body) {
    scf::ForOp::create(b, loc, lane(), length, index(kWarp), ValueRange{},
                       [&](OpBuilder &nested, Location, Value i, ValueRange) {
                         OpBuilder::InsertionGuard guard(b);
                         b.setInsertionPointToStart(nested.getInsertionBlock());
                         body(i);
                         scf::YieldOp::create(b, loc);
                       });
  }
  /// The column of this thread (block x · 128 + thread x) when it is < cols.
  void forColumn(Value cols, function_ref<void(Value column)> body) {
    Value column = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, blockId(gpu::Dimension::x), index(kColumnBlock)),
        lane());
    Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, column, cols);
    auto guard = scf::IfOp::create(b, loc, inside, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(guard.thenBlock());
    body(column);
  }
  /// Lane 0 only.
  void onLaneZero(function_ref<void()> body) {
    Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, lane(), index(0));
    auto guard = scf::IfOp::create(b, loc, first, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(guard.thenBlock());
    body();
  }
  /// max(sqrt(squares), eps). The square root is PTX's correctly rounded sqrt.rn.f32 as
  /// inline asm: the NVVM lowering would turn math.sqrt (and llvm.sqrt) into libdevice's
  /// __nv_sqrtf, which the GPU machine's toolchain may not have to link.
  Value clampedNorm(Value squares) {
    Value root = LLVM::InlineAsmOp::create(b, loc, f32, ValueRange{squares}, "sqrt.rn.f32 $0, $1;",
                                           "=f,f", /*has_side_effects=*/false,
                                           /*is_align_stack=*/false,
                                           LLVM::tailcallkind::TailCallKind::None,
                                           LLVM::AsmDialectAttr(), ArrayAttr())
                     .getResult(0);
    return arith::MaximumFOp::create(b, loc, root, scalar(kNormalizeEps));
  }
  /// Σ_rows of `body(row)` carried in a loop over [0, rows).
  Value sumOverRows(Value rows, function_ref<Value(Value row)> term) {
    auto loop = scf::ForOp::create(
        b, loc, index(0), rows, index(1), ValueRange{scalar(0.0)},
        [&](OpBuilder &nested, Location, Value row, ValueRange carried) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          scf::YieldOp::create(b, loc, add(carried.front(), term(row)));
        });
    return loop.getResult(0);
  }

  OpBuilder &b;
  Location loc;
  Type f32;
};

void emitKernels(GpuReparamEmitter &e, gpu::GPUModuleOp module, ReparamLinearOp op,
                 StringRef base) {
  MemRefType matrix = e.matrix(), vec = e.vector();
  std::string prefix = base.str() + "_";
  // t = W·u (also ⟨G_o, W_o⟩ per row below): one warp per row.
  auto rowDots = [&](StringRef name, bool matrixRhs) {
    auto f = e.kernel(module, prefix + name.str(), {matrix, matrixRhs ? matrix : vec, vec},
                      "rows", kWarp);
    e.begin(f);
    Value a = f.getArgument(0), rhs = f.getArgument(1), out = f.getArgument(2);
    Value row = e.blockId(gpu::Dimension::x);
    Value dot = e.warpSum(e.dim(a, 1), [&](Value i) {
      Value other = matrixRhs ? e.load(rhs, {row, i}) : e.load(rhs, {i});
      return e.mul(e.load(a, {row, i}), other);
    });
    e.onLaneZero([&] { e.store(dot, out, {row}); });
    e.end();
  };
  rowDots("matvec", /*matrixRhs=*/false);
  {
    // v = t / max(‖t‖, eps), one warp.
    auto f = e.kernel(module, prefix + "normalize", {vec, vec}, "1", kWarp);
    e.begin(f);
    Value t = f.getArgument(0), v = f.getArgument(1), length = e.dim(t, 0);
    Value norm = e.clampedNorm(e.warpSum(length, [&](Value i) {
      Value x = e.load(t, {i});
      return e.mul(x, x);
    }));
    e.warpFor(length, [&](Value i) { e.store(e.div(e.load(t, {i}), norm), v, {i}); });
    e.end();
  }
  {
    // s = Wᵀ·v: a thread per column, coalesced along W's rows.
    auto f = e.kernel(module, prefix + "matvec_t", {matrix, vec, vec}, "cols/128", kColumnBlock);
    e.begin(f);
    Value w = f.getArgument(0), v = f.getArgument(1), s = f.getArgument(2);
    e.forColumn(e.dim(w, 1), [&](Value column) {
      Value sum = e.sumOverRows(e.dim(w, 0), [&](Value row) {
        return e.mul(e.load(v, {row}), e.load(w, {row, column}));
      });
      e.store(sum, s, {column});
    });
    e.end();
  }
  {
    // u' = s / max(‖s‖, eps), σ = ‖s‖² / max(‖s‖, eps), scales = {σ, γ/σ}; training: u ← u'.
    auto f = e.kernel(module, prefix + "power_finish", {vec, vec, vec, vec, vec}, "1", kWarp);
    e.begin(f);
    Value s = f.getArgument(0), gamma = f.getArgument(1), u = f.getArgument(2),
          uNext = f.getArgument(3), scales = f.getArgument(4), length = e.dim(s, 0);
    Value squares = e.warpSum(length, [&](Value i) {
      Value x = e.load(s, {i});
      return e.mul(x, x);
    });
    Value norm = e.clampedNorm(squares);
    e.warpFor(length, [&](Value i) {
      Value stepped = e.div(e.load(s, {i}), norm);
      e.store(stepped, uNext, {i});
      if (op.getTraining())
        e.store(stepped, u, {i});
    });
    Value sigma = e.div(squares, norm);
    e.onLaneZero([&] {
      e.store(sigma, scales, {e.index(0)});
      e.store(e.div(e.load(gamma, {e.index(0)}), sigma), scales, {e.index(1)});
    });
    e.end();
  }
  rowDots("row_inner", /*matrixRhs=*/true);
  {
    // ⟨G, W⟩ = Σ row sums; dγ = ⟨G, W⟩/σ; factors[0] = k = γ·⟨G, W⟩/σ².
    auto f = e.kernel(module, prefix + "sigma_factors", {vec, vec, vec, vec, vec}, "1", kWarp);
    e.begin(f);
    Value rowSums = f.getArgument(0), gamma = f.getArgument(1), scales = f.getArgument(2),
          gradGamma = f.getArgument(3), factors = f.getArgument(4);
    Value inner = e.warpSum(e.dim(rowSums, 0), [&](Value i) { return e.load(rowSums, {i}); });
    e.onLaneZero([&] {
      Value sigma = e.load(scales, {e.index(0)});
      e.store(e.div(inner, sigma), gradGamma, {e.index(0)});
      Value k = e.div(e.mul(e.load(gamma, {e.index(0)}), inner), e.mul(sigma, sigma));
      e.store(k, factors, {e.index(0)});
    });
    e.end();
  }
  {
    // dW[o, i] = (γ/σ)·G[o, i] − k·v[o]·u'[i], in place; grid (cols/128, rows).
    auto f = e.kernel(module, prefix + "sigma_term", {matrix, vec, vec, vec, vec},
                      "cols/128 x rows", kColumnBlock);
    e.begin(f);
    Value g = f.getArgument(0), v = f.getArgument(1), uNext = f.getArgument(2),
          scales = f.getArgument(3), factors = f.getArgument(4);
    Value row = e.blockId(gpu::Dimension::y);
    e.forColumn(e.dim(g, 1), [&](Value column) {
      Value scaled = e.mul(e.load(scales, {e.index(1)}), e.load(g, {row, column}));
      Value rankOne =
          e.mul(e.mul(e.load(factors, {e.index(0)}), e.load(v, {row})), e.load(uNext, {column}));
      e.store(arith::SubFOp::create(e.b, e.loc, scaled, rankOne), g, {row, column});
    });
    e.end();
  }
  if (op.getBias()) {
    // db[j] = Σ_n dy[n, j]: a thread per column.
    auto f = e.kernel(module, prefix + "bias_grad", {matrix, vec}, "cols/128", kColumnBlock);
    e.begin(f);
    Value dy = f.getArgument(0), db = f.getArgument(1);
    e.forColumn(e.dim(dy, 1), [&](Value column) {
      e.store(e.sumOverRows(e.dim(dy, 0), [&](Value row) { return e.load(dy, {row, column}); }),
              db, {column});
    });
    e.end();
  }
}

struct AttnLowerReparamLinearGpuPass
    : public impl::AttnLowerReparamLinearGpuBase<AttnLowerReparamLinearGpuPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<ReparamLinearOp> ops;
    module.walk([&](ReparamLinearOp op) { ops.push_back(op); });
    for (ReparamLinearOp op : ops) {
      auto function = op->getParentOfType<func::FuncOp>();
      if (!op.getWeight().getType().getElementType().isF32()) {
        op.emitOpError() << "lowers to GPU kernels for f32 operands, got "
                         << op.getWeight().getType().getElementType();
        return signalPassFailure();
      }
      OpBuilder builder(function);
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), builder.getUnitAttr());
      auto kernels = gpu::GPUModuleOp::create(builder, op.getLoc(),
                                              (function.getSymName() + "_kernels").str());
      GpuReparamEmitter emitter(builder, op.getLoc());
      emitKernels(emitter, kernels, op, function.getSymName());
      function.erase();
    }
  }
};
} // namespace
} // namespace mlir::attn
