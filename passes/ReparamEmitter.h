// The loops and products of the σReparam kernels, shared by attn-lower-reparam-linear and
// attn-fuse-reparam-attention (whose block kernels call the same forward and backward).
#ifndef PASSES_REPARAMEMITTER_H
#define PASSES_REPARAMEMITTER_H

#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

namespace mlir::attn {
namespace reparam {
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

} // namespace reparam

/// `@name(x [N, In], w [Out, In], (bias [Out],) gamma [1], u [In], y [N, Out], v [Out],
/// u' [In], scales [2])`: the forward kernel of `op` (its bias and training flag), at the
/// builder's insertion point.
void emitReparamForward(reparam::ReparamEmitter &e, ReparamLinearOp op, StringRef name,
                        func::FuncOp gemm);
/// `@name(dy, x, w, gamma, v, u', scales, dx, dw, (db,) dgamma, compute_dx)`.
void emitReparamBackward(reparam::ReparamEmitter &e, ReparamLinearOp op, StringRef name,
                         func::FuncOp gemm);
} // namespace mlir::attn

#endif // PASSES_REPARAMEMITTER_H
