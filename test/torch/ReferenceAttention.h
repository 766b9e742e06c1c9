// Attention in plain LibTorch float64 math, the reference the op's numerics are checked
// against: s = scale·q·kᵀ (k/v heads repeated for GQA), p = normalizer(s) on allowed keys
// (causal masks j > i, top-left aligned) and 0 elsewhere, o = p·v.
#ifndef TEST_TORCH_REFERENCEATTENTION_H
#define TEST_TORCH_REFERENCEATTENTION_H

#include <ATen/ATen.h>

#include <functional>
#include <optional>

namespace attn::test {

/// p from scores [B, H, Sq, Sk] and the allowed mask [Sq, Sk]; 0 where not allowed.
using ReferenceNormalizer =
    std::function<at::Tensor(const at::Tensor &scores, const at::Tensor &allowed)>;

/// Row-wise softmax over the allowed keys; a row with no allowed key gives 0.
ReferenceNormalizer softmaxNormalizer();
/// sigmoid(s + bias); bias defaults to -ln(Sk).
ReferenceNormalizer sigmoidNormalizer(std::optional<double> bias = std::nullopt);
/// relu(s) · scale; scale defaults to 1/Sk.
ReferenceNormalizer reluNormalizer(std::optional<double> scale = std::nullopt);
/// Any elementwise p = f(s).
ReferenceNormalizer elementwiseNormalizer(std::function<at::Tensor(const at::Tensor &)> f);

struct ReferenceResult {
  at::Tensor out, gradQ, gradK, gradV; ///< float64
};

/// The output and, for the upstream gradient `gradOut`, the gradients of q, k and v.
ReferenceResult referenceAttention(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                                   const at::Tensor &gradOut,
                                   const ReferenceNormalizer &normalizer, double scale,
                                   bool causal);

} // namespace attn::test

#endif // TEST_TORCH_REFERENCEATTENTION_H
