// The fused σReparam-QKV attention JIT: spec -> the variant's attn.attention (VariantSource)
// wrapped into one function x -> attn.reparam_linear -> attn.split_heads -> attn.attention
// (canonicalized; its generic print is the key) -> runtime::Jit (memory, disk cache,
// compile) -> attn-fuse-reparam-attention -> LLVM -> object -> ORC, with the host GEMM and
// the attention host calls bound. The attention tiles are the variant's own CpuKernels (the
// same cache entry plain attn::attention uses), run by the embedding's AttentionHost.
#include "runtime/ReparamAttention.h"

#include "codegen/CpuPipeline.h"
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"
#include "runtime/CpuExecutor.h"
#include "runtime/HostObject.h"
#include "runtime/Jit.h"
#include "runtime/Log.h"
#include "runtime/ReparamHost.h"
#include "runtime/VariantSource.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <mutex>
#include <stdexcept>

namespace attn::runtime {
namespace {
constexpr const char *kFunction = "reparam_qkv_attention";

template <int Rank> struct Descriptor {
  float *allocated, *aligned;
  int64_t offset, sizes[Rank], strides[Rank];
};

template <int Rank> View<Rank> viewOf(const Descriptor<Rank> *d) {
  View<Rank> view;
  view.data = d->aligned + d->offset;
  for (int i = 0; i < Rank; ++i) {
    view.sizes[i] = d->sizes[i];
    view.strides[i] = d->strides[i];
  }
  return view;
}
template <int Rank> Descriptor<Rank> describe(const View<Rank> &view) {
  Descriptor<Rank> d{view.data, view.data, 0, {}, {}};
  for (int i = 0; i < Rank; ++i) {
    d.sizes[i] = view.sizes[i];
    d.strides[i] = view.strides[i];
  }
  return d;
}
Descriptor<2> describe(const ReparamMatrix &m) {
  float *data = static_cast<float *>(m.data);
  return {data, data, 0, {m.rows, m.cols}, {m.rowStride > 0 ? m.rowStride : 1, 1}};
}
Descriptor<1> describe(const ReparamVector &v) {
  float *data = static_cast<float *>(v.data);
  return {data, data, 0, {v.size}, {1}};
}
/// The contiguous QKV buffer (or its gradient) [B, S, width].
Descriptor<3> describeBuffer(float *data, int64_t batch, int64_t length, int64_t width) {
  return {data, data, 0, {batch, length, width}, {length * width, width, 1}};
}

/// The first error an AttentionHost raised on this thread during a block call (exceptions
/// must not unwind through JIT-compiled frames).
thread_local std::string hostError;

void attentionForwardTrampoline(int64_t handle, Descriptor<4> *q, Descriptor<4> *k,
                                Descriptor<4> *v, Descriptor<4> *out, Descriptor<3> *lse) {
  if (!hostError.empty())
    return;
  try {
    reinterpret_cast<const AttentionHost *>(handle)->forward(viewOf(q), viewOf(k), viewOf(v),
                                                             viewOf(out), viewOf(lse));
  } catch (const std::exception &error) {
    hostError = error.what();
  } catch (...) {
    hostError = "the attention host failed";
  }
}

void attentionBackwardTrampoline(int64_t handle, Descriptor<4> *q, Descriptor<4> *k,
                                 Descriptor<4> *v, Descriptor<4> *out, Descriptor<3> *lse,
                                 Descriptor<4> *gradOut, Descriptor<4> *gradQuery,
                                 Descriptor<4> *gradKey, Descriptor<4> *gradValue) {
  if (!hostError.empty())
    return;
  try {
    reinterpret_cast<const AttentionHost *>(handle)->backward(
        viewOf(q), viewOf(k), viewOf(v), viewOf(out), viewOf(lse), viewOf(gradOut),
        viewOf(gradQuery), viewOf(gradKey), viewOf(gradValue));
  } catch (const std::exception &error) {
    hostError = error.what();
  } catch (...) {
    hostError = "the attention host failed";
  }
}

void throwIfHostFailed() {
  throwIfGemmFailed("attn reparam_qkv_attention");
  if (hostError.empty())
    return;
  std::string message = "attn reparam_qkv_attention: " + hostError;
  hostError.clear();
  throw std::runtime_error(message);
}

const std::vector<HostSymbol> &hostSymbols() {
  static const std::vector<HostSymbol> symbols = [] {
    std::vector<HostSymbol> all = reparamGemmSymbols();
    all.push_back({"_mlir_ciface_attn_host_attention_forward",
                   reinterpret_cast<void *>(&attentionForwardTrampoline)});
    all.push_back({"_mlir_ciface_attn_host_attention_backward",
                   reinterpret_cast<void *>(&attentionBackwardTrampoline)});
    return all;
  }();
  return symbols;
}

std::string describe(const ReparamAttentionSpec &spec) {
  return "reparam_qkv_attention " + spec.attention.variant.substr(0, 60) + " heads " +
         std::to_string(spec.heads) + "/" + std::to_string(spec.kvHeads) + " D " +
         std::to_string(spec.attention.headDim) + (spec.bias ? " bias" : "") +
         (spec.training ? " training" : " eval") + (spec.attention.causal ? " causal" : "");
}

/// The block as one function of x, W, (b,) γ, u: the variant's attn.attention (as the
/// attention JIT builds it) fed by the σReparam projection through attn.split_heads.
mlir::OwningOpRef<mlir::ModuleOp> buildBlock(const ReparamAttentionSpec &spec,
                                             mlir::MLIRContext &context) {
  using namespace mlir;
  CanonicalVariant variant = buildCanonicalVariant(spec.attention, context);
  if (!variant.captures.declarations.empty())
    throw CompileError("attn reparam_qkv_attention: the attention variant reads captured "
                       "tensors, which the fused block does not take yet");
  mlir::attn::AttentionOp attention;
  variant.module->walk([&](mlir::attn::AttentionOp op) { attention = op; });
  if (!attention)
    throw CompileError("attn reparam_qkv_attention: the variant holds no attn.attention");
  if (attention.getBias() || attention.getKvLengths())
    throw CompileError("attn reparam_qkv_attention: the variant's attention takes a bias or "
                       "kv_lengths, which the fused block does not take yet");
  auto queryType = cast<RankedTensorType>(attention.getQuery().getType());
  if (!queryType.getElementType().isF32())
    throw CompileError("attn reparam_qkv_attention: the attention must be f32, got " +
                       std::to_string(queryType.getElementType().getIntOrFloatBitWidth()) +
                       "-bit elements");
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  Type f32 = b.getF32Type();
  int64_t dyn = ShapedType::kDynamic;
  auto xType = RankedTensorType::get({dyn, dyn, dyn}, f32);
  auto matrix = RankedTensorType::get({dyn, dyn}, f32);
  auto vector = RankedTensorType::get({dyn}, f32);
  auto gamma = RankedTensorType::get({1}, f32);
  SmallVector<Type> arguments = {xType, matrix};
  if (spec.bias)
    arguments.push_back(vector);
  arguments.append({gamma, vector});
  auto resultType = cast<RankedTensorType>(attention.getResult().getType());
  auto function = func::FuncOp::create(b, loc, kFunction,
                                       b.getFunctionType(arguments, TypeRange{resultType, vector}));
  b.setInsertionPointToStart(function.addEntryBlock());
  auto args = function.getArguments();
  unsigned next = 0;
  Value x = args[next++], w = args[next++];
  Value bias = spec.bias ? args[next++] : Value();
  Value g = args[next++], u = args[next++];
  int64_t width = (spec.heads + 2 * spec.kvHeads) * spec.attention.headDim;
  auto projection = mlir::attn::ReparamLinearOp::create(
      b, loc, RankedTensorType::get({dyn, dyn, width}, f32), vector, x, w, bias, g, u,
      spec.training);
  auto split = mlir::attn::SplitHeadsOp::create(
      b, loc, attention.getQuery().getType(), attention.getKey().getType(),
      attention.getValue().getType(), projection.getResult(), spec.heads, spec.kvHeads);
  IRMapping mapping;
  mapping.map(attention.getQuery(), split.getQuery());
  mapping.map(attention.getKey(), split.getKey());
  mapping.map(attention.getValue(), split.getValue());
  Operation *fused = b.clone(*attention, mapping);
  func::ReturnOp::create(b, loc, ValueRange{fused->getResult(0), projection.getUpdatedU()});
  return module;
}

struct BlockSource {
  std::string canonicalIr, target, options, label;
  int64_t lanes = 16;
};

std::string compileKernel(const BlockSource &source, const char *kernel,
                          const std::string &dumpFolder) {
  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  DiagnosticCollector diagnostics(context);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(source.canonicalIr, &context);
  if (!module)
    throw CompileError("re-reading the IR of " + source.label + " failed:\n" +
                       diagnostics.text());
  mlir::PassManager pm(&context);
  if (!dumpFolder.empty())
    pm.enableIRPrintingToFileTree([](mlir::Pass *, mlir::Operation *) { return false; },
                                  [](mlir::Pass *, mlir::Operation *) { return true; },
                                  /*printModuleScope=*/true, /*printAfterOnlyOnChange=*/true,
                                  /*printAfterOnlyOnFailure=*/false, dumpFolder + "/cpu-stages");
  mlir::attn::AttnFuseReparamAttentionOptions options;
  options.vectorWidth = source.lanes;
  options.kernels = kernel;
  pm.addPass(mlir::attn::createAttnFuseReparamAttention(options));
  codegen::buildCpuLoweringPipeline(pm, /*canonicalizeLlvm=*/false);
  if (mlir::failed(pm.run(*module)) || mlir::failed(mlir::verify(*module)))
    throw CompileError("compiling " + source.label + " failed:\n" + diagnostics.text());
  return emitHostObject(*module, source.lanes * 32, source.label, dumpFolder);
}

std::shared_ptr<const LoadedCpuObject> obtainKernel(const BlockSource &source,
                                                     const char *kernel) {
  ArtifactRequest request;
  request.canonicalIr = source.canonicalIr;
  request.target = source.target;
  request.options = source.options + " kernel=" + kernel;
  request.label = source.label + " " + kernel;
  std::string object = Jit::instance().artifact(request, [&](const std::string &dumpFolder) {
    return compileKernel(source, kernel, dumpFolder);
  });
  return loadCpuObject(object, request.label, hostSymbols());
}

using D1 = Descriptor<1>;
using D2 = Descriptor<2>;
using D3 = Descriptor<3>;
using D4 = Descriptor<4>;
using Forward = void (*)(D2 *, D2 *, D1 *, D1 *, D1 *, D3 *, D4 *, D3 *, D1 *, D1 *, D1 *,
                         int64_t);
using ForwardNoBias = void (*)(D2 *, D2 *, D1 *, D1 *, D3 *, D4 *, D3 *, D1 *, D1 *, D1 *,
                               int64_t);
using Backward = void (*)(D4 *, D2 *, D2 *, D1 *, D3 *, D4 *, D3 *, D1 *, D1 *, D1 *, D3 *, D2 *,
                          D2 *, D1 *, D1 *, bool, int64_t);
using BackwardNoBias = void (*)(D4 *, D2 *, D2 *, D1 *, D3 *, D4 *, D3 *, D1 *, D1 *, D1 *,
                                D3 *, D2 *, D2 *, D1 *, bool, int64_t);

class JitReparamAttentionKernels final : public ReparamAttentionKernels {
public:
  JitReparamAttentionKernels(const ReparamAttentionSpec &spec, BlockSource source)
      : spec_(spec), source_(std::move(source)) {}

  void forward(const ReparamAttentionForwardArgs &a) const override {
    std::call_once(forwardOnce_, [this] {
      forwardObject_ = obtainKernel(source_, "forward");
      forward_ = forwardObject_->lookup(std::string("_mlir_ciface_") + kFunction + "_fwd");
    });
    D2 x = describe(a.x), w = describe(a.weight);
    D1 b = describe(a.bias), gamma = describe(a.gamma), u = describe(a.u), v = describe(a.v),
       uNext = describe(a.uNext), scales = describe(a.scales);
    D3 qkv = describeBuffer(a.qkv, a.batch, a.length, width());
    D4 out = describe(a.out);
    D3 lse = describe(a.lse);
    const auto handle = reinterpret_cast<int64_t>(a.host);
    if (spec_.bias)
      reinterpret_cast<Forward>(forward_)(&x, &w, &b, &gamma, &u, &qkv, &out, &lse, &v, &uNext,
                                          &scales, handle);
    else
      reinterpret_cast<ForwardNoBias>(forward_)(&x, &w, &gamma, &u, &qkv, &out, &lse, &v,
                                                &uNext, &scales, handle);
    throwIfHostFailed();
  }

  void backward(const ReparamAttentionBackwardArgs &a) const override {
    std::call_once(backwardOnce_, [this] {
      backwardObject_ = obtainKernel(source_, "backward");
      backward_ = backwardObject_->lookup(std::string("_mlir_ciface_") + kFunction + "_bwd");
    });
    D4 gradOut = describe(a.gradOut), out = describe(a.out);
    D2 x = describe(a.x), w = describe(a.weight), dx = describe(a.gradX),
       dw = describe(a.gradWeight);
    D1 gamma = describe(a.gamma), v = describe(a.v), uNext = describe(a.uNext),
       scales = describe(a.scales), db = describe(a.gradBias), dgamma = describe(a.gradGamma);
    D3 qkv = describeBuffer(a.qkv, a.batch, a.length, width()),
       dqkv = describeBuffer(a.gradQkv, a.batch, a.length, width());
    D3 lse = describe(a.lse);
    const auto handle = reinterpret_cast<int64_t>(a.host);
    if (spec_.bias)
      reinterpret_cast<Backward>(backward_)(&gradOut, &x, &w, &gamma, &qkv, &out, &lse, &v,
                                            &uNext, &scales, &dqkv, &dx, &dw, &db, &dgamma,
                                            a.computeGradX, handle);
    else
      reinterpret_cast<BackwardNoBias>(backward_)(&gradOut, &x, &w, &gamma, &qkv, &out, &lse,
                                                  &v, &uNext, &scales, &dqkv, &dx, &dw, &dgamma,
                                                  a.computeGradX, handle);
    throwIfHostFailed();
  }

  const std::string &sourceIr() const override { return source_.canonicalIr; }

private:
  int64_t width() const { return (spec_.heads + 2 * spec_.kvHeads) * spec_.attention.headDim; }

  ReparamAttentionSpec spec_;
  BlockSource source_;
  mutable std::once_flag forwardOnce_, backwardOnce_;
  mutable std::shared_ptr<const LoadedCpuObject> forwardObject_, backwardObject_;
  mutable void *forward_ = nullptr;
  mutable void *backward_ = nullptr;
};

std::shared_ptr<const ReparamAttentionKernels> build(const ReparamAttentionSpec &spec) {
  if (!hostGemmInstalled())
    throw CompileError("the σReparam kernels call the host GEMM, and none is installed "
                       "(runtime::setHostGemm; libattn_torch installs LibTorch's)");
  if (spec.heads <= 0 || spec.kvHeads <= 0 || spec.heads % spec.kvHeads != 0)
    throw CompileError("attn reparam_qkv_attention: heads " + std::to_string(spec.heads) +
                       " must be a positive multiple of kv_heads " +
                       std::to_string(spec.kvHeads));
  if (spec.attention.headDim != spec.attention.valueHeadDim || spec.attention.keyLengths ||
      !spec.attention.captures.empty() || spec.attention.bfloat16)
    throw CompileError("attn reparam_qkv_attention: the fused block takes f32 heads of one "
                       "head dim, without key lengths or captures");
  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  DiagnosticCollector diagnostics(context);
  BlockSource source;
  source.label = describe(spec);
  mlir::OwningOpRef<mlir::ModuleOp> module = buildBlock(spec, context);
  if (mlir::failed(mlir::verify(*module)))
    throw CompileError("building the IR of " + source.label + " failed:\n" + diagnostics.text());
  mlir::PassManager canonicalize(&context);
  canonicalize.addPass(mlir::createCanonicalizerPass());
  if (mlir::failed(canonicalize.run(*module)))
    throw CompileError("canonicalizing " + source.label + " failed:\n" + diagnostics.text());
  llvm::raw_string_ostream text(source.canonicalIr);
  module->print(text, mlir::OpPrintingFlags().printGenericOpForm());
  source.target = hostTargetDescription();
  source.lanes = reparamHostLanes();
  source.options = "reparam-attention cpu-object O3 pic lanes=" + std::to_string(source.lanes) +
                   " llvm=" + hostObjectLlvmPipeline();
  return std::make_shared<JitReparamAttentionKernels>(spec, std::move(source));
}
} // namespace

std::string ReparamAttentionSpec::cacheKey() const {
  return "reparam-attention|" + std::string(bias ? "bias|" : "nobias|") +
         (training ? "training|" : "eval|") + std::to_string(heads) + "|" +
         std::to_string(kvHeads) + "|" + attention.cacheKey();
}

std::shared_ptr<const ReparamAttentionKernels>
getReparamAttentionKernels(const ReparamAttentionSpec &spec) {
  static MemoryCache<ReparamAttentionKernels> &cache = *new MemoryCache<ReparamAttentionKernels>;
  return cache.getOrCreate(spec.cacheKey(), [&] { return build(spec); });
}
} // namespace attn::runtime
