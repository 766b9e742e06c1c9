// attn-lower-reparam-linear: attn.reparam_linear → a forward and a backward kernel over memref
// views. The kernels generate everything around the products — the power step, σ, γ/σ, the
// σ term of dW, dγ and db — and hand the three products (y = x·Wᵀ, dx = dy·W, G = dyᵀ·x) to
// the host's GEMM through one external function, `@attn_host_gemm_<type>`, with γ/σ as its
// alpha: W is never copied or scaled. Why a call rather than generated products: LibTorch's
// GEMM (MKL/OpenBLAS on CPU, cuBLAS on GPU) runs these ViT-sized products near the machine's
// peak on every core, and the work around them is O(Out·In), <2% of the GEMMs' at ViT-B
// shapes (bench/results/reparam-*.md has the measured split).
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERREPARAMLINEAR
#include "passes/Passes.h.inc"

namespace {
/// torch.nn.functional.normalize's floor of the norm.
constexpr double kNormalizeEps = 1e-12;
/// Bits of the host gemm's `flags` argument.
constexpr int64_t kTransposeA = 1, kTransposeB = 2;

/// Builds the kernels' loops: rows of W, x and dy are contiguous (last stride 1), so every
/// loop runs along them in host vectors, the tail lanes masked off.
class ReparamEmitter {
public:
  ReparamEmitter(OpBuilder &builder, Location loc, Type element, int64_t f32Lanes)
      : b(builder), loc(loc), element(element),
        vector(VectorType::get({f32Lanes * 32 / element.getIntOrFloatBitWidth()}, element)) {}

  /// [rows, cols] with a dynamic row stride and unit column stride.
  MemRefType matrixType() const {
    int64_t dyn = ShapedType::kDynamic;
    return MemRefType::get({dyn, dyn}, element,
                           StridedLayoutAttr::get(b.getContext(), dyn, {dyn, 1}));
  }
  /// A contiguous vector (the caller allocates v, u', the scales and the gradients).
  MemRefType vectorType() const { return MemRefType::get({ShapedType::kDynamic}, element); }

  /// `func.func @name(arguments)` with the C interface, at the builder's insertion point; the
  /// builder moves into its body (callers hold an InsertionGuard).
  func::FuncOp createKernel(StringRef name, ArrayRef<Type> arguments) {
    auto kernel = func::FuncOp::create(b, loc, name, b.getFunctionType(arguments, {}));
    kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    b.setInsertionPointToStart(kernel.addEntryBlock());
    return kernel;
  }

  Value index(int64_t value) { return arith::ConstantIndexOp::create(b, loc, value); }
  Value scalar(double value) {
    return arith::ConstantOp::create(b, loc, element, b.getFloatAttr(element, value));
  }
  Value splat(Value scalarValue) {
    return vector::BroadcastOp::create(b, loc, vector, scalarValue);
  }
  Value dim(Value memref, int64_t axis) { return memref::DimOp::create(b, loc, memref, axis); }
  Value load(Value memref, ValueRange indices) {
    return memref::LoadOp::create(b, loc, memref, indices);
  }
  void store(Value value, Value memref, ValueRange indices) {
    memref::StoreOp::create(b, loc, value, memref, indices);
  }

  /// for (i = 0; i < length; i += lanes) body(i, mask of the valid lanes), carrying `init`.
  Value chunks(Value length, Value init,
               function_ref<Value(Value offset, Value mask, Value carried)> body) {
    auto loop = scf::ForOp::create(
        b, loc, index(0), length, index(vector.getNumElements()), ValueRange{init},
        [&](OpBuilder &nested, Location, Value offset, ValueRange carried) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          Value remaining = arith::SubIOp::create(b, loc, length, offset);
          Value mask = vector::CreateMaskOp::create(
              b, loc, VectorType::get(vector.getShape(), b.getI1Type()), ValueRange{remaining});
          scf::YieldOp::create(b, loc, body(offset, mask, carried.front()));
        });
    return loop.getResult(0);
  }
  /// chunks() without a carried value.
  void forChunks(Value length, function_ref<void(Value offset, Value mask)> body) {
    Value unit = index(0);
    chunks(length, unit, [&](Value offset, Value mask, Value carried) {
      body(offset, mask);
      return carried;
    });
  }
  /// for (row = 0; row < rows; ++row) body(row, carried).
  Value rowsLoop(Value rows, Value init, function_ref<Value(Value row, Value carried)> body) {
    auto loop = scf::ForOp::create(
        b, loc, index(0), rows, index(1), ValueRange{init},
        [&](OpBuilder &nested, Location, Value row, ValueRange carried) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          scf::YieldOp::create(b, loc, body(row, carried.front()));
        });
    return loop.getResult(0);
  }
  void forRows(Value rows, function_ref<void(Value row)> body) {
    rowsLoop(rows, index(0), [&](Value row, Value carried) {
      body(row);
      return carried;
    });
  }

  Value loadChunk(Value memref, ValueRange indices, Value mask) {
    return vector::MaskedLoadOp::create(b, loc, vector, memref, indices, mask,
                                        splat(scalar(0.0)));
  }
  void storeChunk(Value value, Value memref, ValueRange indices, Value mask) {
    vector::MaskedStoreOp::create(b, loc, memref, indices, mask, value);
  }
  Value fma(Value a, Value x, Value y) { return vector::FMAOp::create(b, loc, a, x, y); }
  Value sum(Value vectorValue) {
    return vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, vectorValue, Value(),
                                       arith::FastMathFlags::reassoc);
  }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  /// max(sqrt(squares), eps): the norm torch's normalize divides by.
  Value clampedNorm(Value squares) {
    return arith::MaximumFOp::create(b, loc, math::SqrtOp::create(b, loc, squares),
                                     scalar(kNormalizeEps));
  }

  /// Σ_i a[row, i]·c[i] (c a vector, or row `row` of a matrix when `matrixC`).
  Value rowDot(Value a, Value row, Value c, bool matrixC) {
    Value accumulated =
        chunks(dim(a, 1), splat(scalar(0.0)), [&](Value i, Value mask, Value acc) {
          Value other = matrixC ? loadChunk(c, {row, i}, mask) : loadChunk(c, {i}, mask);
          return fma(loadChunk(a, {row, i}, mask), other, acc);
        });
    return sum(accumulated);
  }
  /// Σ_i vec[i]², vec contiguous of `length`.
  Value squares(Value vec, Value length) {
    return sum(chunks(length, splat(scalar(0.0)), [&](Value i, Value mask, Value acc) {
      Value chunk = loadChunk(vec, {i}, mask);
      return fma(chunk, chunk, acc);
    }));
  }
  /// vec[i] /= divisor for i < length.
  void divideInPlace(Value vec, Value length, Value divisor) {
    Value divisors = splat(divisor);
    forChunks(length, [&](Value i, Value mask) {
      Value chunk = loadChunk(vec, {i}, mask);
      storeChunk(arith::DivFOp::create(b, loc, chunk, divisors), vec, {i}, mask);
    });
  }
  void fill(Value vec, Value length, double value) {
    Value filled = splat(scalar(value));
    forChunks(length, [&](Value i, Value mask) { storeChunk(filled, vec, {i}, mask); });
  }

  /// The host GEMM: c = alpha·op(a)·op(b) + bias (bias broadcast over rows; empty: none).
  func::FuncOp gemmDeclaration(ModuleOp module) {
    std::string name = "attn_host_gemm_" + typeName();
    if (auto existing = module.lookupSymbol<func::FuncOp>(name))
      return existing;
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(module.getBody());
    MemRefType matrix = matrixType();
    auto type = b.getFunctionType(
        {matrix, matrix, vectorType(), matrix, element, b.getI64Type()}, {});
    auto declaration = func::FuncOp::create(b, loc, name, type);
    declaration.setPrivate();
    declaration->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    return declaration;
  }
  void gemm(func::FuncOp declaration, Value a, Value bMatrix, Value bias, Value c, Value alpha,
            int64_t flags) {
    Value flagValue = arith::ConstantIntOp::create(b, loc, flags, 64);
    func::CallOp::create(b, loc, declaration, ValueRange{a, bMatrix, bias, c, alpha, flagValue});
  }
  /// The empty bias of products that add none.
  Value noBias() {
    Value empty = memref::AllocaOp::create(b, loc, MemRefType::get({0}, element));
    return memref::CastOp::create(b, loc, vectorType(), empty);
  }

  std::string typeName() const { return element.isF64() ? "f64" : "f32"; }

  OpBuilder &b;
  Location loc;
  Type element;
  VectorType vector;
};

/// Function arguments of the op, each by its position in the enclosing function.
LogicalResult checkOperandsAreArguments(ReparamLinearOp op) {
  for (Value operand : op->getOperands())
    if (!isa<BlockArgument>(operand) ||
        cast<BlockArgument>(operand).getOwner() != &op->getParentOfType<func::FuncOp>().front())
      return op.emitOpError()
             << "can only be lowered when its operands are the function's arguments (the "
                "kernels replace the function)";
  return success();
}

/// @NAME_fwd(x [N, In], w [Out, In], (bias [Out],) gamma [1], u [In], y [N, Out], v [Out],
///           u' [In], scales [2] = {σ, γ/σ}):
///   v = normalize(W·u); u' = normalize(Wᵀ·v); σ = vᵀ·W·u'; (training: u ← u');
///   y = (γ/σ)·x·Wᵀ + bias by the host GEMM with alpha γ/σ.
void emitForward(ReparamEmitter &e, ReparamLinearOp op, StringRef name, func::FuncOp gemm) {
  OpBuilder &b = e.b;
  MemRefType matrix = e.matrixType(), vec = e.vectorType();
  SmallVector<Type> arguments = {matrix, matrix};
  if (op.getBias())
    arguments.push_back(vec);
  arguments.append({vec, vec, matrix, vec, vec, vec});
  OpBuilder::InsertionGuard guard(b);
  func::FuncOp kernel = e.createKernel(name, arguments);
  auto args = kernel.getArguments();
  unsigned next = 0;
  Value x = args[next++], w = args[next++];
  Value bias = op.getBias() ? args[next++] : Value();
  Value gamma = args[next++], u = args[next++], y = args[next++], v = args[next++],
        uNext = args[next++], scales = args[next++];
  Value zero = e.index(0), one = e.index(1);
  Value outFeatures = e.dim(w, 0), inFeatures = e.dim(w, 1);

  // Power step, first half: v = W·u, then its norm.
  Value vSquares = e.rowsLoop(outFeatures, e.scalar(0.0), [&](Value row, Value carried) {
    Value dot = e.rowDot(w, row, u, /*matrixC=*/false);
    e.store(dot, v, {row});
    return e.add(carried, e.mul(dot, dot));
  });
  e.divideInPlace(v, outFeatures, e.clampedNorm(vSquares));
  // Second half: u' = Wᵀ·v, accumulated row by row of W so that W is read along its rows.
  e.fill(uNext, inFeatures, 0.0);
  e.forRows(outFeatures, [&](Value row) {
    Value weight = e.splat(e.load(v, {row}));
    e.forChunks(inFeatures, [&](Value i, Value mask) {
      Value acc = e.loadChunk(uNext, {i}, mask);
      e.storeChunk(e.fma(e.loadChunk(w, {row, i}, mask), weight, acc), uNext, {i}, mask);
    });
  });
  // σ = vᵀ·W·u' taken as (Wᵀ·v)ᵀ·u' = s·s / max(‖s‖, eps) with s = Wᵀ·v: the same bilinear
  // form, without a third pass over W.
  Value sSquares = e.squares(uNext, inFeatures);
  Value sNorm = e.clampedNorm(sSquares);
  Value sigma = e.div(sSquares, sNorm);
  e.divideInPlace(uNext, inFeatures, sNorm);
  if (op.getTraining())
    e.forChunks(inFeatures, [&](Value i, Value mask) {
      e.storeChunk(e.loadChunk(uNext, {i}, mask), u, {i}, mask);
    });
  Value scale = e.div(e.load(gamma, {zero}), sigma);
  e.store(sigma, scales, {zero});
  e.store(scale, scales, {one});
  // y = scale·x·Wᵀ + bias: the scale is the product's alpha, W is read as it is.
  e.gemm(gemm, x, w, bias ? bias : e.noBias(), y, scale, kTransposeB);
  func::ReturnOp::create(b, e.loc);
}

/// @NAME_bwd(dy [N, Out], x [N, In], w [Out, In], gamma [1], v [Out], u' [In], scales [2],
///           dx [N, In], dw [Out, In], (db [Out],) dgamma [1], compute_dx):
///   dx = (γ/σ)·dy·W (when compute_dx), G = dyᵀ·x into dw, ⟨G, W⟩,
///   dw = (γ/σ)·G − (γ/σ²)·⟨G, W⟩·v·u'ᵀ, dγ = ⟨G, W⟩/σ, db = Σ_rows dy.
void emitBackward(ReparamEmitter &e, ReparamLinearOp op, StringRef name, func::FuncOp gemm) {
  OpBuilder &b = e.b;
  MemRefType matrix = e.matrixType(), vec = e.vectorType();
  SmallVector<Type> arguments = {matrix, matrix, matrix, vec, vec, vec, vec, matrix, matrix};
  if (op.getBias())
    arguments.push_back(vec);
  arguments.append({vec, b.getI1Type()});
  OpBuilder::InsertionGuard guard(b);
  func::FuncOp kernel = e.createKernel(name, arguments);
  auto args = kernel.getArguments();
  unsigned next = 0;
  Value dy = args[next++], x = args[next++], w = args[next++], gamma = args[next++],
        v = args[next++], uNext = args[next++], scales = args[next++], dx = args[next++],
        dw = args[next++];
  Value db = op.getBias() ? args[next++] : Value();
  Value dgamma = args[next++], computeDx = args[next++];
  Value zero = e.index(0), one = e.index(1);
  Value sigma = e.load(scales, {zero}), scale = e.load(scales, {one});
  Value outFeatures = e.dim(w, 0), inFeatures = e.dim(w, 1);

  auto ifDx = scf::IfOp::create(b, e.loc, computeDx, /*withElseRegion=*/false);
  {
    OpBuilder::InsertionGuard thenGuard(b);
    b.setInsertionPointToStart(ifDx.thenBlock());
    e.gemm(gemm, dy, w, e.noBias(), dx, scale, 0);
  }
  e.gemm(gemm, dy, x, e.noBias(), dw, e.scalar(1.0), kTransposeA);
  // ⟨G, W⟩, one row sum at a time (short vector sums, then a sum of Out row sums).
  Value inner = e.rowsLoop(outFeatures, e.scalar(0.0), [&](Value row, Value carried) {
    return e.add(carried, e.rowDot(dw, row, w, /*matrixC=*/true));
  });
  e.store(e.div(inner, sigma), dgamma, {zero});
  // dW = scale·G − k·v·u'ᵀ with k = γ·⟨G, W⟩/σ², in place over G.
  Value k = e.div(e.mul(e.load(gamma, {zero}), inner), e.mul(sigma, sigma));
  Value scales_ = e.splat(scale);
  e.forRows(outFeatures, [&](Value row) {
    Value rankOne = e.splat(arith::NegFOp::create(b, e.loc, e.mul(k, e.load(v, {row}))));
    e.forChunks(inFeatures, [&](Value i, Value mask) {
      Value g = e.mul(e.loadChunk(dw, {row, i}, mask), scales_);
      e.storeChunk(e.fma(rankOne, e.loadChunk(uNext, {i}, mask), g), dw, {row, i}, mask);
    });
  });
  if (db) {
    e.fill(db, outFeatures, 0.0);
    e.forRows(e.dim(dy, 0), [&](Value row) {
      e.forChunks(outFeatures, [&](Value j, Value mask) {
        Value acc = e.loadChunk(db, {j}, mask);
        e.storeChunk(e.add(acc, e.loadChunk(dy, {row, j}, mask)), db, {j}, mask);
      });
    });
  }
  func::ReturnOp::create(b, e.loc);
}

struct AttnLowerReparamLinearPass
    : public impl::AttnLowerReparamLinearBase<AttnLowerReparamLinearPass> {
  using AttnLowerReparamLinearBase::AttnLowerReparamLinearBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (kernels != "all" && kernels != "forward" && kernels != "backward") {
      module.emitError() << "attn-lower-reparam-linear: kernels must be all, forward or "
                            "backward, got '"
                         << kernels << "'";
      return signalPassFailure();
    }
    if (vectorWidth < 2 || (vectorWidth & (vectorWidth - 1)) != 0) {
      module.emitError() << "attn-lower-reparam-linear: vector-width must be a power of two "
                            ">= 2, got "
                         << vectorWidth;
      return signalPassFailure();
    }
    SmallVector<ReparamLinearOp> ops;
    module.walk([&](ReparamLinearOp op) { ops.push_back(op); });
    for (ReparamLinearOp op : ops) {
      auto function = op->getParentOfType<func::FuncOp>();
      if (failed(checkOperandsAreArguments(op)))
        return signalPassFailure();
      if (function.getOps<ReparamLinearOp>().end() !=
          std::next(function.getOps<ReparamLinearOp>().begin())) {
        op.emitOpError() << "must be the only attn.reparam_linear of its function to be "
                            "lowered (the kernels replace the function)";
        return signalPassFailure();
      }
      Type element = op.getWeight().getType().getElementType();
      if (!element.isF32() && !element.isF64()) {
        op.emitOpError() << "lowers for f32 and f64 operands, got " << element
                         << " (σReparam keeps float32 master weights under autocast)";
        return signalPassFailure();
      }
      OpBuilder builder(function);
      ReparamEmitter emitter(builder, op.getLoc(), element, vectorWidth);
      func::FuncOp gemm = emitter.gemmDeclaration(module);
      builder.setInsertionPoint(function);
      std::string base = function.getSymName().str();
      if (kernels != "backward")
        emitForward(emitter, op, base + "_fwd", gemm);
      if (kernels != "forward")
        emitBackward(emitter, op, base + "_bwd", gemm);
      function.erase();
    }
  }
};
} // namespace
} // namespace mlir::attn
