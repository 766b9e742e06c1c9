// Registers the torch ops of attention: the public attn::attention and the two ops its autograd
// is made of, attn::_attention_forward (out and the row statistics) and attn::_attention_backward.
// Each has CPU, CUDA (when LibTorch has CUDA) and Meta kernels; the Meta kernels are what
// torch.compile's fake tensors run, so a model calling attn::attention traces without a graph
// break, and the traced backward calls attn::_attention_backward like any other op.
#include "frontend/torch/CpuAttention.h"
#include "frontend/torch/InputChecks.h"
#include "frontend/torch/AttentionOpCommon.h"
#ifdef ATTN_TORCH_CUDA
#include "frontend/torch/CudaAttention.h"
#endif

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace attn::torchop {
namespace {

using OptionalTensor = c10::optional<at::Tensor>;

runtime::VariantSpec makeVariantSpec(const at::Tensor &q, const at::Tensor &v, std::string variant,
                                     c10::optional<double> scale, bool causal,
                                     const OptionalTensor &kvLengths, at::TensorList captures,
                                     bool captureGradients = false) {
  return torchop::makeVariantSpec(q.size(3), v.size(3), q.scalar_type(), std::move(variant),
                                  scale, causal, kvLengths.has_value(), captures,
                                  captureGradients);
}

AttentionForward attentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                  const at::Tensor &k, const at::Tensor &v,
                                  const OptionalTensor &kvLengths, at::TensorList captures) {
#ifdef ATTN_TORCH_CUDA
  if (q.is_cuda())
    return cudaAttentionForward(spec, q, k, v, kvLengths, captures);
#endif
  return cpuAttentionForward(spec, q, k, v, kvLengths, captures);
}

AttentionGradients attentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                     const at::Tensor &k, const at::Tensor &v,
                                     const at::Tensor &out, const at::Tensor &lse,
                                     const at::Tensor &gradOut, const OptionalTensor &kvLengths,
                                     at::TensorList captures) {
#ifdef ATTN_TORCH_CUDA
  if (q.is_cuda())
    return cudaAttentionBackward(spec, q, k, v, out, lse, gradOut, kvLengths, captures);
#endif
  return cpuAttentionBackward(spec, q, k, v, out, lse, gradOut, kvLengths, captures);
}

/// out [B, Hq, Sq, Dv] in q's dtype; lse [B, Hq, Sq] float32 (meaningful only for row-wise
/// normalizers). One contract for every device, so the Meta kernel can state it.
std::tuple<at::Tensor, at::Tensor>
attentionForwardKernel(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                       c10::string_view variant, c10::optional<double> scale, bool isCausal,
                       const OptionalTensor &kvLengths,
                       const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkAttentionInputs(q, k, v, scale);
  checkKeyLengths(q, kvLengths);
  checkCaptures(q, captures);
  AttentionForward result = attentionForward(
      makeVariantSpec(q, v, std::string(variant), scale, isCausal, kvLengths, captures), q, k, v,
      kvLengths, captures);
  return {result.out.to(q.scalar_type()), result.lse};
}

/// Gradients in the dtypes of q, k and v; with `captureGradients`, those of the floating
/// captures too (in their dtypes, in capture order; integer captures have none), else an empty
/// list.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
attentionBackwardKernel(const at::Tensor &gradOut, const at::Tensor &q, const at::Tensor &k,
                        const at::Tensor &v, const at::Tensor &out, const at::Tensor &lse,
                        c10::string_view variant, c10::optional<double> scale, bool isCausal,
                        const OptionalTensor &kvLengths,
                        const OptionalTensorList &capturesArgument, bool captureGradients) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkAttentionInputs(q, k, v, scale);
  checkKeyLengths(q, kvLengths);
  checkCaptures(q, captures);
  AttentionGradients grads = attentionBackward(
      makeVariantSpec(q, v, std::string(variant), scale, isCausal, kvLengths, captures,
                      captureGradients),
      q, k, v, out, lse, gradOut, kvLengths, captures);
  return {grads.q.to(q.scalar_type()), grads.k.to(k.scalar_type()), grads.v.to(v.scalar_type()),
          captureGradientsInDtypes(grads.captures, captures)};
}

/// Reached without autograd (inference mode, or below the Autograd kernel), on CPU or CUDA.
at::Tensor attentionKernel(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                           c10::string_view variant, c10::optional<double> scale, bool isCausal,
                           const OptionalTensor &kvLengths,
                           const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  return std::get<0>(
      attentionForwardKernel(q, k, v, variant, scale, isCausal, kvLengths, captures));
}

// ---- Meta (fake) kernels: shapes and dtypes only; sizes may be symbolic under torch.compile.

std::tuple<at::Tensor, at::Tensor>
attentionForwardMeta(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                     c10::string_view, c10::optional<double> scale, bool,
                     const OptionalTensor &kvLengths, const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkAttentionInputs(q, k, v, scale);
  checkKeyLengths(q, kvLengths);
  checkCaptures(q, captures);
  at::Tensor out =
      at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}, q.options());
  at::Tensor lse = at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2)},
                                    q.options().dtype(at::kFloat));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
attentionBackwardMeta(const at::Tensor &, const at::Tensor &q, const at::Tensor &k,
                      const at::Tensor &v, const at::Tensor &, const at::Tensor &, c10::string_view,
                      c10::optional<double> scale, bool, const OptionalTensor &kvLengths,
                      const OptionalTensorList &capturesArgument, bool captureGradients) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkAttentionInputs(q, k, v, scale);
  checkKeyLengths(q, kvLengths);
  checkCaptures(q, captures);
  return {at::empty_symint(q.sym_sizes(), q.options()),
          at::empty_symint(k.sym_sizes(), k.options()),
          at::empty_symint(v.sym_sizes(), v.options()),
          captureGradientsMeta(captures, captureGradients)};
}

at::Tensor attentionMeta(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                         c10::string_view variant, c10::optional<double> scale, bool isCausal,
                         const OptionalTensor &kvLengths,
                         const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  return std::get<0>(
      attentionForwardMeta(q, k, v, variant, scale, isCausal, kvLengths, captures));
}

// ---- Autograd: the forward and backward ops, called through the dispatcher below autograd.

std::tuple<at::Tensor, at::Tensor> callForward(const at::Tensor &q, const at::Tensor &k,
                                               const at::Tensor &v, const std::string &variant,
                                               c10::optional<double> scale, bool isCausal,
                                               const OptionalTensor &kvLengths,
                                               const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attn::_attention_forward", "")
                             .typed<decltype(attentionForwardKernel)>();
  return op.call(q, k, v, variant, scale, isCausal, kvLengths, captures);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
callBackward(const at::Tensor &gradOut, const at::Tensor &q, const at::Tensor &k,
             const at::Tensor &v, const at::Tensor &out, const at::Tensor &lse,
             const std::string &variant, c10::optional<double> scale, bool isCausal,
             const OptionalTensor &kvLengths,
             const OptionalTensorList &capturesArgument, bool captureGradients) {
  const at::TensorList captures = capturesOf(capturesArgument);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attn::_attention_backward", "")
                             .typed<decltype(attentionBackwardKernel)>();
  return op.call(gradOut, q, k, v, out, lse, variant, scale, isCausal, kvLengths, captures,
                 captureGradients);
}

/// Saves the forward's output and log-sum-exp, which the backward kernels read, and the
/// captures, which they read too. The saved variables are q, k, v, out, lse, kv_lengths (or
/// an undefined tensor), then the captures: kFirstCapture onwards.
class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
public:
  static constexpr size_t kFirstCapture = 6;
  /// The forward's arguments before the captures (q, k, v, variant, scale, is_causal,
  /// kv_lengths): backward returns one gradient per argument and one per capture.
  static constexpr size_t kArgumentsBeforeCaptures = 7;

  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &q,
                            const at::Tensor &k, const at::Tensor &v, const std::string &variant,
                            c10::optional<double> scale, bool isCausal,
                            const OptionalTensor &kvLengths, at::TensorList captures) {
    at::AutoDispatchBelowADInplaceOrView belowAutograd;
    auto [out, lse] = callForward(q, k, v, variant, scale, isCausal, kvLengths, captures);
    // An undefined tensor stands for "no lengths" among the saved variables.
    torch::autograd::variable_list saved{q, k, v, out, lse, kvLengths.value_or(at::Tensor())};
    saved.insert(saved.end(), captures.begin(), captures.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["variant"] = variant;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["is_causal"] = isCausal;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const std::vector<at::Tensor> captures(saved.begin() + kFirstCapture, saved.end());
    // The kernels derive the floating captures' gradients only when one is asked for (they
    // cost a scatter per score read).
    const bool captureGradients = anyCaptureRequiresGrad(captures);
    auto [dq, dk, dv, captureGrads] = callBackward(
        gradOutputs[0], saved[0], saved[1], saved[2], saved[3], saved[4],
        ctx->saved_data["variant"].toStringRef(), ctx->saved_data["scale"].toOptional<double>(),
        ctx->saved_data["is_causal"].toBool(),
        saved[5].defined() ? OptionalTensor(saved[5]) : c10::nullopt, captures,
        captureGradients);
    // One gradient per forward argument; variant, scale, is_causal and kv_lengths have none,
    // nor do integer captures.
    return autogradGradients(dq, dk, dv, kArgumentsBeforeCaptures, captures, captureGrads,
                             captureGradients);
  }
};

at::Tensor attentionAutograd(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                             c10::string_view variant, c10::optional<double> scale, bool isCausal,
                             const OptionalTensor &kvLengths,
                             const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  return AttentionFunction::apply(q, k, v, std::string(variant), scale, isCausal, kvLengths,
                                  captures);
}

} // namespace
} // namespace attn::torchop

TORCH_LIBRARY(attn, m) {
  // kv_lengths [B] (integers): batch b attends to its first kv_lengths[b] keys, so a padded
  // ragged batch runs in one call; keys past the length get zero gradients.
  // captures: the tensors an `mlir:` variant's score_mod and mask regions read, one per
  // function argument that feeds the op's `captures`, in argument order (f32 captures take
  // floating tensors, i32/i64 captures integer or bool tensors; converted and made contiguous).
  m.def("attention(Tensor q, Tensor k, Tensor v, str variant=\"softmax\", float? scale=None, "
        "bool is_causal=False, Tensor? kv_lengths=None, Tensor[]? captures=None) -> Tensor");
  m.def("_attention_forward(Tensor q, Tensor k, Tensor v, str variant, float? scale, "
        "bool is_causal, Tensor? kv_lengths=None, Tensor[]? captures=None) -> "
        "(Tensor out, Tensor lse)");
  // capture_gradients: also return the floating captures' gradients, in capture order.
  m.def("_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
        "Tensor lse, str variant, float? scale, bool is_causal, Tensor? kv_lengths=None, "
        "Tensor[]? captures=None, bool capture_gradients=False) -> "
        "(Tensor, Tensor, Tensor, Tensor[])");
}

TORCH_LIBRARY_IMPL(attn, CPU, m) {
  m.impl("attention", attn::torchop::attentionKernel);
  m.impl("_attention_forward", attn::torchop::attentionForwardKernel);
  m.impl("_attention_backward", attn::torchop::attentionBackwardKernel);
}

#ifdef ATTN_TORCH_CUDA
TORCH_LIBRARY_IMPL(attn, CUDA, m) {
  m.impl("attention", attn::torchop::attentionKernel);
  m.impl("_attention_forward", attn::torchop::attentionForwardKernel);
  m.impl("_attention_backward", attn::torchop::attentionBackwardKernel);
}
#endif

TORCH_LIBRARY_IMPL(attn, Meta, m) {
  m.impl("attention", attn::torchop::attentionMeta);
  m.impl("_attention_forward", attn::torchop::attentionForwardMeta);
  m.impl("_attention_backward", attn::torchop::attentionBackwardMeta);
}

TORCH_LIBRARY_IMPL(attn, Autograd, m) { m.impl("attention", attn::torchop::attentionAutograd); }
