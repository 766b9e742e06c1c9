// Registers the torch op attn::attention with its CPU, CUDA (when LibTorch has CUDA) and
// Autograd kernels.
#include "frontend/torch/CpuAttention.h"
#include "frontend/torch/InputChecks.h"
#ifdef ATTN_TORCH_CUDA
#include "frontend/torch/CudaAttention.h"
#endif

#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

namespace attn::torchop {
namespace {

runtime::VariantSpec makeVariantSpec(const at::Tensor &q, const at::Tensor &v, std::string variant,
                                     c10::optional<double> scale, bool causal) {
  runtime::VariantSpec spec;
  spec.variant = std::move(variant);
  spec.headDim = q.size(3);
  spec.valueHeadDim = v.size(3);
  spec.causal = causal;
  if (scale)
    spec.scale = *scale;
  return spec;
}

AttentionForward attentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                  const at::Tensor &k, const at::Tensor &v) {
#ifdef ATTN_TORCH_CUDA
  if (q.is_cuda())
    return cudaAttentionForward(spec, q, k, v);
#endif
  return cpuAttentionForward(spec, q, k, v);
}

AttentionGradients attentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                     const at::Tensor &k, const at::Tensor &v,
                                     const at::Tensor &out, const at::Tensor &lse,
                                     const at::Tensor &gradOut) {
#ifdef ATTN_TORCH_CUDA
  if (q.is_cuda())
    return cudaAttentionBackward(spec, q, k, v, out, lse, gradOut);
#endif
  return cpuAttentionBackward(spec, q, k, v, out, lse, gradOut);
}

/// Reached without autograd (inference mode, or below the Autograd kernel), on CPU or CUDA.
at::Tensor attentionDevice(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                           c10::string_view variant, c10::optional<double> scale, bool isCausal) {
  checkAttentionInputs(q, k, v, scale);
  const runtime::VariantSpec spec = makeVariantSpec(q, v, std::string(variant), scale, isCausal);
  return attentionForward(spec, q, k, v).out.to(q.scalar_type());
}

/// Saves the kernels' output (float32 on CPU, the compute dtype on CUDA) and the log-sum-exp,
/// which the backward kernels read.
class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
public:
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &q,
                            const at::Tensor &k, const at::Tensor &v, const std::string &variant,
                            c10::optional<double> scale, bool isCausal) {
    checkAttentionInputs(q, k, v, scale);
    AttentionForward result =
        attentionForward(makeVariantSpec(q, v, variant, scale, isCausal), q, k, v);
    ctx->save_for_backward({q, k, v, result.out, result.lse});
    ctx->saved_data["variant"] = variant;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["is_causal"] = isCausal;
    return result.out.to(q.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const runtime::VariantSpec spec = makeVariantSpec(
        q, v, ctx->saved_data["variant"].toStringRef(),
        ctx->saved_data["scale"].toOptional<double>(), ctx->saved_data["is_causal"].toBool());
    AttentionGradients grads = attentionBackward(spec, q, k, v, saved[3], saved[4], gradOutputs[0]);
    // One gradient per forward argument; variant, scale and is_causal have none.
    return {grads.q.to(q.scalar_type()),
            grads.k.to(k.scalar_type()),
            grads.v.to(v.scalar_type()),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor attentionAutograd(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                             c10::string_view variant, c10::optional<double> scale, bool isCausal) {
  return AttentionFunction::apply(q, k, v, std::string(variant), scale, isCausal);
}

} // namespace
} // namespace attn::torchop

TORCH_LIBRARY(attn, m) {
  m.def("attention(Tensor q, Tensor k, Tensor v, str variant=\"softmax\", float? scale=None, "
        "bool is_causal=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(attn, CPU, m) { m.impl("attention", attn::torchop::attentionDevice); }

#ifdef ATTN_TORCH_CUDA
TORCH_LIBRARY_IMPL(attn, CUDA, m) { m.impl("attention", attn::torchop::attentionDevice); }
#endif

TORCH_LIBRARY_IMPL(attn, Autograd, m) { m.impl("attention", attn::torchop::attentionAutograd); }
