// Registers attn::attention_varlen, attention over packed sequences (FlashAttention's varlen
// interface): q [Tq, Hq, D], k and v [Tk, Hkv, D|Dv] hold the sequences one after another and
// cu_seqlens_q, cu_seqlens_k ([count + 1]) say where each starts, so a batch of different
// query and key lengths runs in one call with no padding. Like attn::attention it is made of
// two ops, attn::_attention_varlen_forward and attn::_attention_varlen_backward, with CPU and
// Meta kernels (torch.compile traces it) and autograd.
#include "frontend/torch/CpuAttention.h"
#include "frontend/torch/InputChecks.h"
#include "frontend/torch/AttentionOpCommon.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

namespace attn::torchop {
namespace {

/// Checks what the CPU kernels need beyond shapes: the offsets' values, and no CUDA tensors
/// (the GPU kernels take one padded batch; packed sequences are not lowered for them).
void checkPackedCall(const at::Tensor &q, const at::Tensor &k, const at::Tensor &cuSeqlensQ,
                     const at::Tensor &cuSeqlensK) {
  TORCH_CHECK(!q.is_cuda(), "attn::attention_varlen: packed sequences run on the CPU kernels "
              "only; on CUDA pad the batch and call attn::attention with kv_lengths");
  checkSequenceOffsets(cuSeqlensQ, q.size(0), "cu_seqlens_q");
  checkSequenceOffsets(cuSeqlensK, k.size(0), "cu_seqlens_k");
}

runtime::VariantSpec packedVariantSpec(const at::Tensor &q, const at::Tensor &v,
                                       c10::string_view variant, c10::optional<double> scale,
                                       bool isCausal, at::TensorList captures,
                                       bool captureGradients = false) {
  return makeVariantSpec(q.size(2), v.size(2), q.scalar_type(), std::string(variant), scale,
                         isCausal, /*keyLengths=*/false, captures, captureGradients);
}

/// out [Tq, Hq, Dv] in q's dtype, lse [Hq, Tq] float32 (meaningful only for row-wise
/// normalizers).
std::tuple<at::Tensor, at::Tensor>
packedForwardKernel(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                    const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                    c10::string_view variant, c10::optional<double> scale, bool isCausal,
                    const OptionalTensorList &capturesArgument) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkPackedInputs(q, k, v, cuSeqlensQ, cuSeqlensK, scale);
  checkCaptures(q, captures);
  checkPackedCall(q, k, cuSeqlensQ, cuSeqlensK);
  AttentionForward result =
      cpuPackedAttentionForward(packedVariantSpec(q, v, variant, scale, isCausal, captures), q, k,
                                v, cuSeqlensQ, cuSeqlensK, captures);
  return {result.out.to(q.scalar_type()), result.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
packedBackwardKernel(const at::Tensor &gradOut, const at::Tensor &q, const at::Tensor &k,
                     const at::Tensor &v, const at::Tensor &out, const at::Tensor &lse,
                     const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                     c10::string_view variant, c10::optional<double> scale, bool isCausal,
                     const OptionalTensorList &capturesArgument, bool captureGradients) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkPackedInputs(q, k, v, cuSeqlensQ, cuSeqlensK, scale);
  checkCaptures(q, captures);
  checkPackedCall(q, k, cuSeqlensQ, cuSeqlensK);
  AttentionGradients grads = cpuPackedAttentionBackward(
      packedVariantSpec(q, v, variant, scale, isCausal, captures, captureGradients), q, k, v,
      out, lse, gradOut, cuSeqlensQ, cuSeqlensK, captures);
  return {grads.q.to(q.scalar_type()), grads.k.to(k.scalar_type()), grads.v.to(v.scalar_type()),
          captureGradientsInDtypes(grads.captures, captures)};
}

at::Tensor packedKernel(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                        const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                        c10::string_view variant, c10::optional<double> scale, bool isCausal,
                        const OptionalTensorList &captures) {
  return std::get<0>(
      packedForwardKernel(q, k, v, cuSeqlensQ, cuSeqlensK, variant, scale, isCausal, captures));
}

// ---- Meta (fake) kernels: shapes and dtypes only.

std::tuple<at::Tensor, at::Tensor>
packedForwardMeta(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                  const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK, c10::string_view,
                  c10::optional<double> scale, bool, const OptionalTensorList &capturesArgument) {
  checkPackedInputs(q, k, v, cuSeqlensQ, cuSeqlensK, scale);
  checkCaptures(q, capturesOf(capturesArgument));
  return {at::empty_symint({q.sym_size(0), q.sym_size(1), v.sym_size(2)}, q.options()),
          at::empty_symint({q.sym_size(1), q.sym_size(0)}, q.options().dtype(at::kFloat))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
packedBackwardMeta(const at::Tensor &, const at::Tensor &q, const at::Tensor &k,
                   const at::Tensor &v, const at::Tensor &, const at::Tensor &,
                   const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK, c10::string_view,
                   c10::optional<double> scale, bool, const OptionalTensorList &capturesArgument,
                   bool captureGradients) {
  const at::TensorList captures = capturesOf(capturesArgument);
  checkPackedInputs(q, k, v, cuSeqlensQ, cuSeqlensK, scale);
  checkCaptures(q, captures);
  return {at::empty_symint(q.sym_sizes(), q.options()),
          at::empty_symint(k.sym_sizes(), k.options()),
          at::empty_symint(v.sym_sizes(), v.options()),
          captureGradientsMeta(captures, captureGradients)};
}

at::Tensor packedMeta(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                      const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                      c10::string_view variant, c10::optional<double> scale, bool isCausal,
                      const OptionalTensorList &captures) {
  return std::get<0>(
      packedForwardMeta(q, k, v, cuSeqlensQ, cuSeqlensK, variant, scale, isCausal, captures));
}

// ---- Autograd.

/// Saves q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, then the captures (kFirstCapture on).
class PackedAttentionFunction : public torch::autograd::Function<PackedAttentionFunction> {
public:
  static constexpr size_t kFirstCapture = 7;
  /// The forward's arguments before the captures (q, k, v, cu_seqlens_q, cu_seqlens_k,
  /// variant, scale, is_causal): backward returns one gradient per argument and per capture.
  static constexpr size_t kArgumentsBeforeCaptures = 8;

  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &q,
                            const at::Tensor &k, const at::Tensor &v, const at::Tensor &cuSeqlensQ,
                            const at::Tensor &cuSeqlensK, const std::string &variant,
                            c10::optional<double> scale, bool isCausal,
                            at::TensorList captures) {
    at::AutoDispatchBelowADInplaceOrView belowAutograd;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("attn::_attention_varlen_forward", "")
                               .typed<decltype(packedForwardKernel)>();
    auto [out, lse] =
        op.call(q, k, v, cuSeqlensQ, cuSeqlensK, variant, scale, isCausal, captures);
    torch::autograd::variable_list saved{q, k, v, out, lse, cuSeqlensQ, cuSeqlensK};
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
    const bool captureGradients = anyCaptureRequiresGrad(captures);
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("attn::_attention_varlen_backward", "")
                               .typed<decltype(packedBackwardKernel)>();
    auto [dq, dk, dv, captureGrads] =
        op.call(gradOutputs[0], saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
                saved[6], ctx->saved_data["variant"].toStringRef(),
                ctx->saved_data["scale"].toOptional<double>(),
                ctx->saved_data["is_causal"].toBool(), OptionalTensorList(captures),
                captureGradients);
    return autogradGradients(dq, dk, dv, kArgumentsBeforeCaptures, captures, captureGrads,
                             captureGradients);
  }
};

at::Tensor packedAutograd(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                          const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                          c10::string_view variant, c10::optional<double> scale, bool isCausal,
                          const OptionalTensorList &captures) {
  return PackedAttentionFunction::apply(q, k, v, cuSeqlensQ, cuSeqlensK, std::string(variant),
                                        scale, isCausal, capturesOf(captures));
}

} // namespace
} // namespace attn::torchop

TORCH_LIBRARY_FRAGMENT(attn, m) {
  // Packed sequences: sequence s is q[cu_seqlens_q[s] : cu_seqlens_q[s+1]] attending to
  // k, v[cu_seqlens_k[s] : cu_seqlens_k[s+1]]; causal masks j > i within each sequence
  // (top-left, as attn::attention); score_mod and mask regions see b = s and indices counted
  // from the sequence's start. Returns [Tq, Hq, Dv].
  m.def("attention_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, "
        "Tensor cu_seqlens_k, str variant=\"softmax\", float? scale=None, bool is_causal=False, "
        "Tensor[]? captures=None) -> Tensor");
  // lse: [Hq, Tq] float32.
  m.def("_attention_varlen_forward(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, "
        "Tensor cu_seqlens_k, str variant, float? scale, bool is_causal, "
        "Tensor[]? captures=None) -> (Tensor out, Tensor lse)");
  m.def("_attention_varlen_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
        "Tensor lse, Tensor cu_seqlens_q, Tensor cu_seqlens_k, str variant, float? scale, "
        "bool is_causal, Tensor[]? captures=None, bool capture_gradients=False) -> "
        "(Tensor, Tensor, Tensor, Tensor[])");
}

TORCH_LIBRARY_IMPL(attn, CPU, m) {
  m.impl("attention_varlen", attn::torchop::packedKernel);
  m.impl("_attention_varlen_forward", attn::torchop::packedForwardKernel);
  m.impl("_attention_varlen_backward", attn::torchop::packedBackwardKernel);
}

#ifdef ATTN_TORCH_CUDA
// A clear error rather than the dispatcher's "no CUDA kernel" (checkPackedCall says what to do).
TORCH_LIBRARY_IMPL(attn, CUDA, m) {
  m.impl("attention_varlen", attn::torchop::packedKernel);
  m.impl("_attention_varlen_forward", attn::torchop::packedForwardKernel);
  m.impl("_attention_varlen_backward", attn::torchop::packedBackwardKernel);
}
#endif

TORCH_LIBRARY_IMPL(attn, Meta, m) {
  m.impl("attention_varlen", attn::torchop::packedMeta);
  m.impl("_attention_varlen_forward", attn::torchop::packedForwardMeta);
  m.impl("_attention_varlen_backward", attn::torchop::packedBackwardMeta);
}

TORCH_LIBRARY_IMPL(attn, Autograd, m) {
  m.impl("attention_varlen", attn::torchop::packedAutograd);
}
