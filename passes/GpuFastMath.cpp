// attn-gpu-fast-math: f32 transcendental math in gpu.module kernels -> one approximate PTX
// instruction each (ex2/tanh/lg2.approx, as inline asm so that no libdevice is needed), and
// multiply-add contraction allowed, as nvcc's default -fmad=true.
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNGPUFASTMATH
#include "passes/Passes.h.inc"

namespace {
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

struct AttnGpuFastMathPass : impl::AttnGpuFastMathBase<AttnGpuFastMathPass> {
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    RewritePatternSet patterns(context);
    patterns.add<ApproximateMath>(context);
    FrozenRewritePatternSet frozen(std::move(patterns));
    for (auto kernels : getOperation().getOps<gpu::GPUModuleOp>()) {
      if (failed(applyPatternsGreedily(kernels, frozen)))
        return signalPassFailure();
      // Without contraction the NVPTX backend emits mul.rn/sub.rn, which ptxas may not fuse.
      kernels.walk([&](arith::ArithFastMathInterface op) {
        op->setAttr(op.getFastMathAttrName(),
                    arith::FastMathFlagsAttr::get(context, arith::FastMathFlags::contract));
      });
    }
  }
};
} // namespace
} // namespace mlir::attn
