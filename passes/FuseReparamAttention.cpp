// attn-fuse-reparam-attention: a σReparam QKV projection feeding attn.attention
//   %y, %u' = attn.reparam_linear %x, %w ... : [B, S, E] -> [B, S, (Hq + 2 Hkv) D]
//   %q, %k, %v = attn.split_heads %y {heads = Hq, kv_heads = Hkv}
//   %o = attn.attention %q, %k, %v ...
// becomes one forward and one backward kernel over a single QKV buffer [B, S, (Hq + 2 Hkv) D]:
// the σReparam forward (power step, then the product on the host GEMM) writes the buffer, and
// the attention reads q, k and v as strided views of it (memref.expand_shape, subview,
// transpose: no copy); the backward writes dQ, dK and dV into views of one gradient buffer of
// the same layout, which is the σReparam backward's dy as it is. The attention's tiles run on
// the host (`@attn_host_attention_forward/_backward`, given an opaque handle): the runtime
// compiles them from `@<function>_attention`, the attn.attention alone, which this pass emits
// beside the kernels, and runs them in parallel.
#include "passes/ReparamEmitter.h"

#include "mlir/IR/AffineMap.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNFUSEREPARAMATTENTION
#include "passes/Passes.h.inc"

namespace {
using reparam::ReparamEmitter;

/// The block in a function: its three ops, checked.
struct Block {
  ReparamLinearOp projection;
  SplitHeadsOp split;
  AttentionOp attention;
};

FailureOr<Block> matchBlock(func::FuncOp function) {
  Block block;
  for (Operation &op : function.front()) {
    if (auto reparam = dyn_cast<ReparamLinearOp>(op)) {
      if (block.projection)
        return reparam.emitOpError()
               << "must be the only attn.reparam_linear of a fused block's function";
      block.projection = reparam;
    }
  }
  if (!block.projection)
    return failure(); // not a block: left alone
  ReparamLinearOp projection = block.projection;
  for (Value operand : projection->getOperands())
    if (!isa<BlockArgument>(operand))
      return projection.emitOpError()
             << "in a fused block takes the function's arguments as operands (the kernels "
                "replace the function)";
  if (!projection.getResult().hasOneUse() ||
      !isa<SplitHeadsOp>(*projection.getResult().getUsers().begin()))
    return projection.emitOpError()
           << "in a fused block must feed exactly one attn.split_heads (its result is the QKV "
              "buffer the attention reads)";
  block.split = cast<SplitHeadsOp>(*projection.getResult().getUsers().begin());
  Value q = block.split.getQuery(), k = block.split.getKey(), v = block.split.getValue();
  if (!q.hasOneUse() || !isa<AttentionOp>(*q.getUsers().begin()))
    return block.split.emitOpError()
           << "in a fused block must feed exactly one attn.attention";
  block.attention = cast<AttentionOp>(*q.getUsers().begin());
  AttentionOp attention = block.attention;
  if (attention.getQuery() != q || attention.getKey() != k || attention.getValue() != v ||
      !k.hasOneUse() || !v.hasOneUse())
    return attention.emitOpError()
           << "in a fused block takes q, k and v from the attn.split_heads, in that order, and "
              "nothing else does";
  if (attention.getBias() || attention.getKvLengths() || !attention.getCaptures().empty())
    return attention.emitOpError()
           << "in a fused block takes no bias, kv_lengths or captures yet";
  Type element = projection.getWeight().getType().getElementType();
  if (!element.isF32())
    return projection.emitOpError()
           << "in a fused block lowers for f32 (the attention kernels read f32 views), got "
           << element;
  if (projection.getInput().getType().getRank() != 3)
    return projection.emitOpError() << "in a fused block takes x as [B, S, E], got "
                                    << projection.getInput().getType();
  auto terminator = cast<func::ReturnOp>(function.front().getTerminator());
  for (Value returned : terminator.getOperands())
    if (returned != attention.getResult() && returned != projection.getUpdatedU() &&
        returned != projection.getU()) // eval: the canonicalizer forwards u itself
      return function.emitOpError()
             << "of a fused block may return only the attention's result and the updated u";
  return block;
}

/// Builds the kernels of one block.
class BlockEmitter {
public:
  BlockEmitter(ReparamEmitter &e, Block block) : e(e), b(e.b), block(block) {
    heads = block.split.getHeads();
    kvHeads = block.split.getKvHeads();
    headDim = block.split.getQuery().getType().getDimSize(3);
    valueDim = block.attention.getResult().getType().getDimSize(3);
    width = (heads + 2 * kvHeads) * headDim;
  }

  /// The QKV buffer (and its gradient): [B, S, (Hq + 2 Hkv) D], contiguous.
  MemRefType bufferType() const {
    int64_t dyn = ShapedType::kDynamic;
    return MemRefType::get({dyn, dyn, width}, e.element);
  }
  /// A [B, H, S, D] view with a unit last stride (q, k, v, out and their gradients).
  MemRefType view4Type() const {
    int64_t dyn = ShapedType::kDynamic;
    return MemRefType::get({dyn, dyn, dyn, dyn}, e.element,
                           StridedLayoutAttr::get(b.getContext(), dyn, {dyn, dyn, dyn, 1}));
  }
  /// [B, Hq, S] (lse).
  MemRefType view3Type() const {
    int64_t dyn = ShapedType::kDynamic;
    return MemRefType::get({dyn, dyn, dyn}, e.element,
                           StridedLayoutAttr::get(b.getContext(), dyn, {dyn, dyn, 1}));
  }

  func::FuncOp hostDeclaration(ModuleOp module, StringRef name, unsigned view4s) {
    if (auto existing = module.lookupSymbol<func::FuncOp>(name))
      return existing;
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(module.getBody());
    // (handle, q, k, v, out, lse[, dout, dq, dk, dv]): four views, lse, then the rest.
    SmallVector<Type> arguments = {b.getI64Type(), view4Type(), view4Type(), view4Type(),
                                   view4Type(), view3Type()};
    for (unsigned i = 4; i < view4s; ++i)
      arguments.push_back(view4Type());
    auto declaration =
        func::FuncOp::create(b, e.loc, name, b.getFunctionType(arguments, {}));
    declaration.setPrivate();
    declaration->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    return declaration;
  }

  /// q, k, v as views of `buffer` [B, S, (Hq + 2 Hkv) D]: expand the features into heads,
  /// take each group of heads, swap S and H. No data moves.
  SmallVector<Value, 3> headViews(Value buffer) {
    Value batch = e.dim(buffer, 0), length = e.dim(buffer, 1);
    int64_t groups = heads + 2 * kvHeads;
    SmallVector<OpFoldResult> shape = {batch, length, b.getIndexAttr(groups),
                                       b.getIndexAttr(headDim)};
    auto expandedType = MemRefType::get(
        {ShapedType::kDynamic, ShapedType::kDynamic, groups, headDim}, e.element);
    Value expanded = memref::ExpandShapeOp::create(
        b, e.loc, expandedType, buffer, ArrayRef<ReassociationIndices>{{0}, {1}, {2, 3}}, shape);
    AffineMap swap = AffineMap::getPermutationMap(ArrayRef<unsigned>{0, 2, 1, 3}, b.getContext());
    SmallVector<Value, 3> views;
    int64_t first = 0;
    for (int64_t count : {heads, kvHeads, kvHeads}) {
      SmallVector<OpFoldResult> offsets = {b.getIndexAttr(0), b.getIndexAttr(0),
                                           b.getIndexAttr(first), b.getIndexAttr(0)};
      SmallVector<OpFoldResult> sizes = {batch, length, b.getIndexAttr(count),
                                         b.getIndexAttr(headDim)};
      SmallVector<OpFoldResult> strides(4, b.getIndexAttr(1));
      Value group = memref::SubViewOp::create(b, e.loc, expanded, offsets, sizes, strides);
      Value transposed = memref::TransposeOp::create(b, e.loc, group, AffineMapAttr::get(swap));
      views.push_back(memref::CastOp::create(b, e.loc, view4Type(), transposed));
      first += count;
    }
    return views;
  }

  /// The buffer as the σReparam kernels' [B·S, (Hq + 2 Hkv) D] matrix (a view).
  Value matrixView(Value buffer) {
    Value rows = memref::CollapseShapeOp::create(
        b, e.loc, buffer, ArrayRef<ReassociationIndices>{{0, 1}, {2}});
    return memref::CastOp::create(b, e.loc, e.matrixType(), rows);
  }

  /// @NAME_fwd(x [B·S, E], w, (bias,) gamma, u, qkv [B, S, N·D], out [B, Hq, S, Dv],
  ///           lse [B, Hq, S], v, u', scales, handle)
  void emitForward(ModuleOp module, StringRef name, func::FuncOp reparamForward) {
    func::FuncOp host = hostDeclaration(module, "attn_host_attention_forward", 4);
    MemRefType matrix = e.matrixType(), vec = e.vectorType();
    bool bias = static_cast<bool>(block.projection.getBias());
    SmallVector<Type> arguments = {matrix, matrix};
    if (bias)
      arguments.push_back(vec);
    arguments.append({vec, vec, bufferType(), view4Type(), view3Type(), vec, vec, vec,
                      b.getI64Type()});
    OpBuilder::InsertionGuard guard(b);
    func::FuncOp kernel = e.createKernel(name, arguments);
    auto args = kernel.getArguments();
    unsigned next = 0;
    Value x = args[next++], w = args[next++];
    Value biasValue = bias ? args[next++] : Value();
    Value gamma = args[next++], u = args[next++], qkv = args[next++], out = args[next++],
          lse = args[next++], v = args[next++], uNext = args[next++], scales = args[next++],
          handle = args[next++];
    SmallVector<Value> reparamArguments = {x, w};
    if (bias)
      reparamArguments.push_back(biasValue);
    reparamArguments.append({gamma, u, matrixView(qkv), v, uNext, scales});
    func::CallOp::create(b, e.loc, reparamForward, reparamArguments);
    SmallVector<Value, 3> views = headViews(qkv);
    func::CallOp::create(b, e.loc, host,
                         ValueRange{handle, views[0], views[1], views[2], out, lse});
    func::ReturnOp::create(b, e.loc);
  }

  /// @NAME_bwd(dout, x, w, gamma, qkv, out, lse, v, u', scales, dqkv [B, S, N·D], dx, dw,
  ///           (db,) dgamma, compute_dx, handle)
  void emitBackward(ModuleOp module, StringRef name, func::FuncOp reparamBackward) {
    func::FuncOp host = hostDeclaration(module, "attn_host_attention_backward", 8);
    MemRefType matrix = e.matrixType(), vec = e.vectorType();
    bool bias = static_cast<bool>(block.projection.getBias());
    SmallVector<Type> arguments = {view4Type(), matrix,      matrix, vec,    bufferType(),
                                   view4Type(), view3Type(), vec,    vec,    vec,
                                   bufferType(), matrix,     matrix};
    if (bias)
      arguments.push_back(vec);
    arguments.append({vec, b.getI1Type(), b.getI64Type()});
    OpBuilder::InsertionGuard guard(b);
    func::FuncOp kernel = e.createKernel(name, arguments);
    auto args = kernel.getArguments();
    unsigned next = 0;
    Value dout = args[next++], x = args[next++], w = args[next++], gamma = args[next++],
          qkv = args[next++], out = args[next++], lse = args[next++], v = args[next++],
          uNext = args[next++], scales = args[next++], dqkv = args[next++], dx = args[next++],
          dw = args[next++];
    Value db = bias ? args[next++] : Value();
    Value dgamma = args[next++], computeDx = args[next++], handle = args[next++];
    SmallVector<Value, 3> views = headViews(qkv);
    SmallVector<Value, 3> gradients = headViews(dqkv);
    func::CallOp::create(b, e.loc, host,
                         ValueRange{handle, views[0], views[1], views[2], out, lse, dout,
                                    gradients[0], gradients[1], gradients[2]});
    SmallVector<Value> reparamArguments = {matrixView(dqkv), x,     w,     gamma, v,
                                           uNext,            scales, dx,   dw};
    if (bias)
      reparamArguments.push_back(db);
    reparamArguments.append({dgamma, computeDx});
    func::CallOp::create(b, e.loc, reparamBackward, reparamArguments);
    func::ReturnOp::create(b, e.loc);
  }

  /// @NAME_attention(q, k, v) -> out: the attn.attention alone, for the attention JIT.
  void emitAttention(StringRef name) {
    AttentionOp attention = block.attention;
    Value q = attention.getQuery(), k = attention.getKey(), v = attention.getValue();
    OpBuilder::InsertionGuard guard(b);
    auto function = func::FuncOp::create(
        b, e.loc, name,
        b.getFunctionType({q.getType(), k.getType(), v.getType()},
                          {attention.getResult().getType()}));
    b.setInsertionPointToStart(function.addEntryBlock());
    IRMapping mapping;
    mapping.map(q, function.getArgument(0));
    mapping.map(k, function.getArgument(1));
    mapping.map(v, function.getArgument(2));
    Operation *clone = b.clone(*attention, mapping);
    func::ReturnOp::create(b, e.loc, clone->getResults());
  }

private:
  ReparamEmitter &e;
  OpBuilder &b;
  Block block;
  int64_t heads = 0, kvHeads = 0, headDim = 0, valueDim = 0, width = 0;
};

struct AttnFuseReparamAttentionPass
    : public impl::AttnFuseReparamAttentionBase<AttnFuseReparamAttentionPass> {
  using AttnFuseReparamAttentionBase::AttnFuseReparamAttentionBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (kernels != "all" && kernels != "forward" && kernels != "backward" &&
        kernels != "attention") {
      module.emitError() << "attn-fuse-reparam-attention: kernels must be all, forward, "
                            "backward or attention, got '"
                         << kernels << "'";
      return signalPassFailure();
    }
    if (vectorWidth < 2 || (vectorWidth & (vectorWidth - 1)) != 0) {
      module.emitError() << "attn-fuse-reparam-attention: vector-width must be a power of two "
                            ">= 2, got "
                         << vectorWidth;
      return signalPassFailure();
    }
    SmallVector<func::FuncOp> functions(module.getOps<func::FuncOp>());
    for (func::FuncOp function : functions) {
      if (function.isExternal())
        continue;
      bool hasProjection = !function.getOps<ReparamLinearOp>().empty();
      if (!hasProjection)
        continue;
      FailureOr<Block> block = matchBlock(function);
      if (failed(block))
        return signalPassFailure();
      OpBuilder builder(function);
      ReparamEmitter emitter(builder, block->projection.getLoc(),
                             block->projection.getWeight().getType().getElementType(),
                             vectorWidth);
      BlockEmitter blockEmitter(emitter, *block);
      builder.setInsertionPoint(function);
      std::string base = function.getSymName().str();
      if (kernels == "attention") {
        blockEmitter.emitAttention(base + "_attention");
        function.erase();
        continue;
      }
      func::FuncOp gemm = emitter.gemmDeclaration(module);
      builder.setInsertionPoint(function);
      if (kernels != "backward") {
        emitReparamForward(emitter, block->projection, base + "_qkv_fwd", gemm);
        auto reparamForward = module.lookupSymbol<func::FuncOp>(base + "_qkv_fwd");
        reparamForward->removeAttr("llvm.emit_c_interface");
        blockEmitter.emitForward(module, base + "_fwd", reparamForward);
      }
      if (kernels != "forward") {
        emitReparamBackward(emitter, block->projection, base + "_qkv_bwd", gemm);
        auto reparamBackward = module.lookupSymbol<func::FuncOp>(base + "_qkv_bwd");
        reparamBackward->removeAttr("llvm.emit_c_interface");
        blockEmitter.emitBackward(module, base + "_bwd", reparamBackward);
      }
      if (kernels == "all")
        blockEmitter.emitAttention(base + "_attention");
      function.erase();
    }
  }
};
} // namespace
} // namespace mlir::attn
