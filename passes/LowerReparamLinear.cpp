// attn-lower-reparam-linear: attn.reparam_linear → a forward and a backward kernel over memref
// views. The kernels generate everything around the products — the power step, σ, γ/σ, the
// σ term of dW, dγ and db — and hand the three products (y = x·Wᵀ, dx = dy·W, G = dyᵀ·x) to
// the host's GEMM through one external function, `@attn_host_gemm_<type>`, with γ/σ as its
// alpha: W is never copied or scaled. Why a call rather than generated products: LibTorch's
// GEMM (MKL/OpenBLAS on CPU, cuBLAS on GPU) runs these ViT-sized products near the machine's
// peak on every core, and the work around them is O(Out·In), <2% of the GEMMs' at ViT-B
// shapes (bench/results/reparam-*.md has the measured split).
#include "passes/ReparamEmitter.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERREPARAMLINEAR
#include "passes/Passes.h.inc"

using reparam::ReparamEmitter;
using reparam::kTransposeA;
using reparam::kTransposeB;

namespace {
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
} // namespace

void emitReparamForward(ReparamEmitter &e, ReparamLinearOp op, StringRef name,
                        func::FuncOp gemm) {
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
void emitReparamBackward(ReparamEmitter &e, ReparamLinearOp op, StringRef name,
                         func::FuncOp gemm) {
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

namespace {
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
        emitReparamForward(emitter, op, base + "_fwd", gemm);
      if (kernels != "forward")
        emitReparamBackward(emitter, op, base + "_bwd", gemm);
      function.erase();
    }
  }
};
} // namespace
} // namespace mlir::attn
