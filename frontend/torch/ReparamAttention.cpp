// The torch op attn::reparam_qkv_attention: the fused σReparam-QKV attention block
// (runtime/ReparamAttention.h). Its work is two internal ops, which the Autograd kernel calls
// below autograd (so that Meta/fake kernels trace them):
//   _reparam_qkv_attention_forward  -> out, qkv, lse, v, u', {σ, γ/σ}  (training: u ← u')
//   _reparam_qkv_attention_backward -> dx, dW (with the σ term), db, dγ
// CPU only: the compiled block writes the projection into one buffer [B, S, (Hq + 2 Hkv) D]
// that the attention tiles read as strided q, k, v views, and the backward's tiles write dQ,
// dK, dV into one buffer of that layout, the σReparam backward's dy. No reshape or
// contiguous copy of q, k, v or of their gradients is made.
#include "frontend/torch/CpuAttention.h"
#include "frontend/torch/ReparamAttention.h"
#include "frontend/torch/ReparamLinearKernels.h"

#include "runtime/ReparamAttention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>

namespace attn::torchop {
namespace {
using OptionalTensor = c10::optional<at::Tensor>;
using ForwardResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr const char *kOp = "attn::reparam_qkv_attention";

int64_t kvHeadsOf(int64_t heads, int64_t kvHeads) { return kvHeads > 0 ? kvHeads : heads; }

/// Checks the block's arguments (Meta included); returns the head dim.
c10::SymInt checkInputs(const at::Tensor &x, const at::Tensor &weight, const OptionalTensor &bias,
                        const at::Tensor &gamma, const at::Tensor &u, int64_t heads,
                        int64_t kvHeads) {
  checkReparamLinearInputs(x, weight, bias, gamma, u);
  TORCH_CHECK(x.dim() == 3, kOp, ": x must be [B, S, E], got shape ", x.sizes());
  TORCH_CHECK(heads > 0 && kvHeads > 0 && heads % kvHeads == 0, kOp, ": heads ", heads,
              " must be a positive multiple of kv_heads ", kvHeads);
  const int64_t groups = heads + 2 * kvHeads;
  const c10::SymInt out = weight.sym_size(0);
  TORCH_CHECK(out % groups == 0, kOp, ": weight has ", out,
              " output features, not a multiple of heads + 2 x kv_heads = ", groups);
  TORCH_CHECK(weight.scalar_type() == at::kFloat, kOp, ": float32 only, got ",
              weight.scalar_type());
  return out / groups;
}

runtime::ReparamAttentionSpec specOf(bool hasBias, bool training, int64_t heads, int64_t kvHeads,
                                     int64_t headDim, const std::string &variant,
                                     c10::optional<double> scale, bool isCausal) {
  runtime::ReparamAttentionSpec spec;
  spec.bias = hasBias;
  spec.training = training;
  spec.heads = heads;
  spec.kvHeads = kvHeads;
  spec.attention.variant = variant;
  spec.attention.headDim = headDim;
  spec.attention.valueHeadDim = headDim;
  spec.attention.causal = isCausal;
  if (scale)
    spec.attention.scale = *scale;
  return spec;
}

std::shared_ptr<const runtime::ReparamAttentionKernels>
blockKernels(const runtime::ReparamAttentionSpec &spec) {
  try {
    return runtime::getReparamAttentionKernels(spec);
  } catch (const std::exception &error) {
    TORCH_CHECK(false, kOp, ": ", error.what());
  }
}

std::shared_ptr<const runtime::CpuKernels> attentionKernels(const runtime::VariantSpec &spec,
                                                            bool backward) {
  try {
    auto kernels = runtime::getCpuKernels(spec);
    if (backward)
      kernels->prepareBackward();
    return kernels;
  } catch (const std::exception &error) {
    TORCH_CHECK(false, kOp, ": ", error.what());
  }
}


template <int Rank> runtime::View<Rank> viewOf(const at::Tensor &tensor) {
  runtime::View<Rank> view;
  view.data = tensor.data_ptr<float>();
  for (int dim = 0; dim < Rank; ++dim) {
    view.sizes[dim] = tensor.size(dim);
    view.strides[dim] = tensor.stride(dim);
  }
  view.strides[Rank - 1] = 1;
  return view;
}

/// The attention tiles the block kernels call back, on torch's threads. The backward's delta
/// (rowsum(dO·O), read by row-wise normalizers only) is computed by the caller.
class TorchAttentionHost final : public runtime::AttentionHost {
public:
  TorchAttentionHost(std::shared_ptr<const runtime::CpuKernels> kernels, runtime::View3 delta)
      : kernels_(std::move(kernels)), delta_(delta) {}

  void forward(const runtime::View4 &q, const runtime::View4 &k, const runtime::View4 &v,
               const runtime::View4 &out, const runtime::View3 &lse) const override {
    forEachTile(q.sizes[0], q.sizes[1], q.sizes[2], kernels_->queryTile(),
                [&](int64_t batch, int64_t head, int64_t start) {
                  kernels_->forwardTile(q, k, v, out, lse, batch, head, start);
                });
  }
  void backward(const runtime::View4 &q, const runtime::View4 &k, const runtime::View4 &v,
                const runtime::View4 &, const runtime::View3 &lse,
                const runtime::View4 &gradOut, const runtime::View4 &gradQuery,
                const runtime::View4 &gradKey, const runtime::View4 &gradValue) const override {
    forEachTile(q.sizes[0], q.sizes[1], q.sizes[2], kernels_->queryTile(),
                [&](int64_t batch, int64_t head, int64_t start) {
                  kernels_->backwardQueryTile(q, k, v, gradOut, lse, delta_, gradQuery, batch,
                                              head, start);
                });
    forEachTile(k.sizes[0], k.sizes[1], k.sizes[2], kernels_->keyTile(),
                [&](int64_t batch, int64_t kvHead, int64_t start) {
                  kernels_->backwardKeyTile(q, k, v, gradOut, lse, delta_, gradKey, gradValue,
                                            batch, kvHead, start);
                });
  }

private:
  std::shared_ptr<const runtime::CpuKernels> kernels_;
  runtime::View3 delta_;
};

runtime::ReparamMatrix matrixOf(const at::Tensor &m) {
  return {m.data_ptr(), m.size(0), m.size(1), m.stride(0)};
}
runtime::ReparamVector vectorOf(const at::Tensor &v) { return {v.data_ptr(), v.numel()}; }

/// [rows, cols] with a unit stride along rows: a view when the layout allows, else a copy.
at::Tensor rowMajor(const at::Tensor &tensor, int64_t cols) {
  at::Tensor matrix = tensor.reshape({-1, cols});
  if (matrix.stride(1) != 1 || matrix.stride(0) < cols)
    matrix = matrix.contiguous();
  return matrix;
}

ForwardResult forwardCpu(const at::Tensor &x, const at::Tensor &weight, const OptionalTensor &bias,
                         const at::Tensor &gamma, at::Tensor &u, bool training, int64_t heads,
                         int64_t kvHeadsArgument, c10::string_view variant,
                         c10::optional<double> scale, bool isCausal) {
  const int64_t kvHeads = kvHeadsOf(heads, kvHeadsArgument);
  const int64_t headDim = checkInputs(x, weight, bias, gamma, u, heads, kvHeads).expect_int();
  const bool hasBias = bias && bias->defined();
  const int64_t batch = x.size(0), length = x.size(1), in = weight.size(1),
                width = weight.size(0);
  TORCH_CHECK(batch > 0 && length > 0, kOp, ": x must hold at least one token, got shape ",
              x.sizes());
  const runtime::ReparamAttentionSpec spec =
      specOf(hasBias, training, heads, kvHeads, headDim, std::string(variant), scale, isCausal);
  auto block = blockKernels(spec);
  TorchAttentionHost host(attentionKernels(spec.attention, /*backward=*/false), {});

  const at::Tensor x2 = rowMajor(x, in), w = rowMajor(weight, in);
  const at::Tensor b = hasBias ? bias->contiguous() : at::Tensor();
  const at::Tensor g = gamma.reshape({1}).contiguous();
  at::Tensor uInPlace = u.is_contiguous() ? u : u.contiguous();
  const at::TensorOptions options = weight.options();
  at::Tensor qkv = at::empty({batch, length, width}, options);
  // The output [B, S, Hq, D] seen as [B, Hq, S, D]: the caller's merge of heads is a view.
  at::Tensor out = at::empty({batch, length, heads, headDim}, options).transpose(1, 2);
  at::Tensor lse = at::empty({batch, heads, length}, options);
  at::Tensor v = at::empty({width}, options), uNext = at::empty({in}, options),
             scales = at::empty({2}, options);
  runtime::ReparamAttentionForwardArgs args;
  args.x = matrixOf(x2);
  args.weight = matrixOf(w);
  if (hasBias)
    args.bias = vectorOf(b);
  args.gamma = vectorOf(g);
  args.u = vectorOf(uInPlace);
  args.qkv = qkv.data_ptr<float>();
  args.batch = batch;
  args.length = length;
  args.out = viewOf<4>(out);
  args.lse = viewOf<3>(lse);
  args.v = vectorOf(v);
  args.uNext = vectorOf(uNext);
  args.scales = vectorOf(scales);
  args.host = &host;
  try {
    block->forward(args);
  } catch (const std::exception &error) {
    TORCH_CHECK(false, error.what());
  }
  if (training && !uInPlace.is_same(u))
    u.copy_(uInPlace);
  return {out, qkv, lse, v, uNext, scales};
}

BackwardResult backwardCpu(const at::Tensor &gradOut, const at::Tensor &x,
                           const at::Tensor &weight, const at::Tensor &gamma,
                           const at::Tensor &qkv, const at::Tensor &out, const at::Tensor &lse,
                           const at::Tensor &v, const at::Tensor &uNext,
                           const at::Tensor &scales, int64_t heads, int64_t kvHeadsArgument,
                           c10::string_view variant, c10::optional<double> scale,
                           bool isCausal, bool hasBias, bool needsGradX) {
  const int64_t kvHeads = kvHeadsOf(heads, kvHeadsArgument);
  const int64_t width = weight.size(0), in = weight.size(1);
  const int64_t headDim = width / (heads + 2 * kvHeads);
  const int64_t batch = x.size(0), length = x.size(1);
  TORCH_CHECK(qkv.is_contiguous() && qkv.size(0) == batch && qkv.size(1) == length &&
                  qkv.size(2) == width,
              kOp, ": the saved QKV buffer must be contiguous [", batch, ", ", length, ", ",
              width, "], got ", qkv.sizes());
  TORCH_CHECK(gradOut.sizes() == out.sizes(), kOp, ": grad_out must be shaped like out ",
              out.sizes(), ", got ", gradOut.sizes());
  const runtime::ReparamAttentionSpec spec = specOf(hasBias, /*training=*/false, heads, kvHeads,
                                                    headDim, std::string(variant), scale,
                                                    isCausal);
  auto block = blockKernels(spec);
  auto kernels = attentionKernels(spec.attention, /*backward=*/true);
  at::Tensor dOut = gradOut.to(at::kFloat);
  if (dOut.stride(-1) != 1)
    dOut = dOut.contiguous();
  // Only row-wise normalizers read delta = rowsum(dO·O); elementwise ones never load it.
  const at::Tensor delta = kernels->rowWise() ? (dOut * out).sum(-1).contiguous() : lse;
  TorchAttentionHost host(kernels, viewOf<3>(delta));

  const at::Tensor x2 = rowMajor(x, in), w = rowMajor(weight, in);
  const at::Tensor g = gamma.reshape({1}).contiguous();
  const at::Tensor vc = v.contiguous(), uc = uNext.contiguous(), sc = scales.contiguous();
  const at::TensorOptions options = weight.options();
  at::Tensor dqkv = at::empty({batch, length, width}, options);
  at::Tensor dx = at::empty({needsGradX ? batch * length : 0, in}, options);
  at::Tensor dw = at::empty({width, in}, options);
  at::Tensor db = at::empty({hasBias ? width : 0}, options);
  at::Tensor dgamma = at::empty({1}, options);
  runtime::ReparamAttentionBackwardArgs args;
  args.gradOut = viewOf<4>(dOut);
  args.x = matrixOf(x2);
  args.weight = matrixOf(w);
  args.gamma = vectorOf(g);
  args.qkv = qkv.data_ptr<float>();
  args.batch = batch;
  args.length = length;
  args.out = viewOf<4>(out);
  args.lse = viewOf<3>(lse);
  args.v = vectorOf(vc);
  args.uNext = vectorOf(uc);
  args.scales = vectorOf(sc);
  args.gradQkv = dqkv.data_ptr<float>();
  args.gradX = matrixOf(dx);
  args.gradWeight = matrixOf(dw);
  args.gradBias = vectorOf(db);
  args.gradGamma = vectorOf(dgamma);
  args.computeGradX = needsGradX;
  args.host = &host;
  try {
    block->backward(args);
  } catch (const std::exception &error) {
    TORCH_CHECK(false, error.what());
  }
  return {needsGradX ? dx.view(x.sizes()) : dx, dw, db, dgamma.view(gamma.sizes())};
}

// ---- Meta (fake) kernels: shapes, dtypes and the output's strides.

ForwardResult forwardMeta(const at::Tensor &x, const at::Tensor &weight,
                          const OptionalTensor &bias, const at::Tensor &gamma, at::Tensor &u,
                          bool, int64_t heads, int64_t kvHeadsArgument, c10::string_view,
                          c10::optional<double>, bool) {
  const int64_t kvHeads = kvHeadsOf(heads, kvHeadsArgument);
  const c10::SymInt headDim = checkInputs(x, weight, bias, gamma, u, heads, kvHeads);
  const at::TensorOptions options = weight.options();
  const c10::SymInt batch = x.sym_size(0), length = x.sym_size(1);
  return {at::empty_symint({batch, length, c10::SymInt(heads), headDim}, options).transpose(1, 2),
          at::empty_symint({batch, length, weight.sym_size(0)}, options),
          at::empty_symint({batch, c10::SymInt(heads), length}, options),
          at::empty_symint({weight.sym_size(0)}, options),
          at::empty_symint({weight.sym_size(1)}, options), at::empty({2}, options)};
}

BackwardResult backwardMeta(const at::Tensor &, const at::Tensor &x, const at::Tensor &weight,
                            const at::Tensor &gamma, const at::Tensor &, const at::Tensor &,
                            const at::Tensor &, const at::Tensor &, const at::Tensor &,
                            const at::Tensor &, int64_t, int64_t, c10::string_view,
                            c10::optional<double>, bool, bool hasBias, bool needsGradX) {
  return {needsGradX ? at::empty_symint(x.sym_sizes(), x.options())
                     : at::empty_symint({0, weight.sym_size(1)}, x.options()),
          at::empty_symint(weight.sym_sizes(), weight.options()),
          hasBias ? at::empty_symint({weight.sym_size(0)}, weight.options())
                  : at::empty({0}, weight.options()),
          at::empty_symint(gamma.sym_sizes(), gamma.options())};
}

ForwardResult callForward(const at::Tensor &x, const at::Tensor &weight,
                          const OptionalTensor &bias, const at::Tensor &gamma, at::Tensor &u,
                          bool training, int64_t heads, int64_t kvHeads,
                          const std::string &variant, c10::optional<double> scale,
                          bool isCausal) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attn::_reparam_qkv_attention_forward", "")
                             .typed<decltype(forwardCpu)>();
  return op.call(x, weight, bias, gamma, u, training, heads, kvHeads, variant, scale, isCausal);
}

BackwardResult callBackward(const at::Tensor &gradOut, const at::Tensor &x,
                            const at::Tensor &weight, const at::Tensor &gamma,
                            const at::Tensor &qkv, const at::Tensor &out, const at::Tensor &lse,
                            const at::Tensor &v, const at::Tensor &uNext,
                            const at::Tensor &scales, int64_t heads, int64_t kvHeads,
                            const std::string &variant, c10::optional<double> scale,
                            bool isCausal, bool hasBias, bool needsGradX) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attn::_reparam_qkv_attention_backward", "")
                             .typed<decltype(backwardCpu)>();
  return op.call(gradOut, x, weight, gamma, qkv, out, lse, v, uNext, scales, heads, kvHeads,
                 variant, scale, isCausal, hasBias, needsGradX);
}

at::Tensor blockKernel(const at::Tensor &x, const at::Tensor &weight, const OptionalTensor &bias,
                       const at::Tensor &gamma, at::Tensor &u, bool training, int64_t heads,
                       int64_t kvHeads, c10::string_view variant, c10::optional<double> scale,
                       bool isCausal) {
  return std::get<0>(callForward(x, weight, bias, gamma, u, training, heads, kvHeads,
                                 std::string(variant), scale, isCausal));
}

at::Tensor blockMeta(const at::Tensor &x, const at::Tensor &weight, const OptionalTensor &bias,
                     const at::Tensor &gamma, at::Tensor &u, bool training, int64_t heads,
                     int64_t kvHeads, c10::string_view variant, c10::optional<double> scale,
                     bool isCausal) {
  return std::get<0>(forwardMeta(x, weight, bias, gamma, u, training, heads, kvHeads, variant,
                                 scale, isCausal));
}

/// Saves what the backward reads: x, W, γ, the QKV buffer, out, lse and the power step's v,
/// u', {σ, γ/σ} (u and v constants of the gradient, as in attn::reparam_linear).
class ReparamAttentionFunction
    : public torch::autograd::Function<ReparamAttentionFunction> {
public:
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            const at::Tensor &weight, const OptionalTensor &bias,
                            const at::Tensor &gamma, at::Tensor u, bool training, int64_t heads,
                            int64_t kvHeads, const std::string &variant,
                            c10::optional<double> scale, bool isCausal) {
    at::AutoDispatchBelowADInplaceOrView belowAutograd;
    auto [out, qkv, lse, v, uNext, scales] =
        callForward(x, weight, bias, gamma, u, training, heads, kvHeads, variant, scale,
                    isCausal);
    ctx->save_for_backward({x, weight, gamma, qkv, out, lse, v, uNext, scales});
    ctx->saved_data["x_needs_grad"] = x.requires_grad();
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kvHeads;
    ctx->saved_data["variant"] = variant;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["is_causal"] = isCausal;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    const bool needsGradX = ctx->saved_data["x_needs_grad"].toBool();
    const bool hasBias = ctx->saved_data["has_bias"].toBool();
    auto [gradX, gradWeight, gradBias, gradGamma] = callBackward(
        gradOutputs[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
        ctx->saved_data["heads"].toInt(), ctx->saved_data["kv_heads"].toInt(),
        ctx->saved_data["variant"].toStringRef(), ctx->saved_data["scale"].toOptional<double>(),
        ctx->saved_data["is_causal"].toBool(), hasBias, needsGradX);
    // One gradient per forward argument: x, weight, bias, gamma; none for the rest.
    return {needsGradX ? gradX : at::Tensor(), gradWeight, hasBias ? gradBias : at::Tensor(),
            gradGamma, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor blockAutograd(const at::Tensor &x, const at::Tensor &weight,
                         const OptionalTensor &bias, const at::Tensor &gamma, at::Tensor &u,
                         bool training, int64_t heads, int64_t kvHeads, c10::string_view variant,
                         c10::optional<double> scale, bool isCausal) {
  const OptionalTensor definedBias = bias && bias->defined() ? bias : OptionalTensor();
  return ReparamAttentionFunction::apply(x, weight, definedBias, gamma, u, training, heads,
                                         kvHeads, std::string(variant), scale, isCausal);
}
} // namespace
} // namespace attn::torchop

namespace attn {
at::Tensor reparam_qkv_attention(const at::Tensor &x, const at::Tensor &weight,
                                 const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                                 at::Tensor &u, bool training, int64_t heads, int64_t kvHeads,
                                 const std::string &variant, c10::optional<double> scale,
                                 bool isCausal) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("attn::reparam_qkv_attention", "")
          .typed<at::Tensor(const at::Tensor &, const at::Tensor &,
                            const c10::optional<at::Tensor> &, const at::Tensor &, at::Tensor &,
                            bool, int64_t, int64_t, c10::string_view, c10::optional<double>,
                            bool)>();
  return op.call(x, weight, bias, gamma, u, training, heads, kvHeads, variant, scale, isCausal);
}
} // namespace attn

TORCH_LIBRARY_FRAGMENT(attn, m) {
  m.def("reparam_qkv_attention(Tensor x, Tensor weight, Tensor? bias, Tensor gamma, "
        "Tensor(a!) u, bool training, int heads, int kv_heads=0, str variant=\"softmax\", "
        "float? scale=None, bool is_causal=False) -> Tensor");
  m.def("_reparam_qkv_attention_forward(Tensor x, Tensor weight, Tensor? bias, Tensor gamma, "
        "Tensor(a!) u, bool training, int heads, int kv_heads, str variant, float? scale, "
        "bool is_causal) -> (Tensor out, Tensor qkv, Tensor lse, Tensor v, Tensor u_next, "
        "Tensor scales)");
  m.def("_reparam_qkv_attention_backward(Tensor grad_out, Tensor x, Tensor weight, "
        "Tensor gamma, Tensor qkv, Tensor out, Tensor lse, Tensor v, Tensor u_next, "
        "Tensor scales, int heads, int kv_heads, str variant, float? scale, bool is_causal, "
        "bool has_bias, bool needs_grad_x) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(attn, CPU, m) {
  m.impl("reparam_qkv_attention", attn::torchop::blockKernel);
  m.impl("_reparam_qkv_attention_forward", attn::torchop::forwardCpu);
  m.impl("_reparam_qkv_attention_backward", attn::torchop::backwardCpu);
}

TORCH_LIBRARY_IMPL(attn, Meta, m) {
  m.impl("reparam_qkv_attention", attn::torchop::blockMeta);
  m.impl("_reparam_qkv_attention_forward", attn::torchop::forwardMeta);
  m.impl("_reparam_qkv_attention_backward", attn::torchop::backwardMeta);
}

TORCH_LIBRARY_IMPL(attn, Autograd, m) {
  m.impl("reparam_qkv_attention", attn::torchop::blockAutograd);
}
