// Attention in plain LibTorch math with the same semantics as Attention's compiled core: the
// Reference backend, and the source of the attention-entropy diagnostic.
#ifndef MODELS_REFERENCEATTENTION_H
#define MODELS_REFERENCEATTENTION_H

#include "models/AttentionVariant.h"

namespace attn::models {

struct ReferenceAttentionSpec {
  NormalizerSpec normalizer;
  /// Absent: 1/sqrt(D).
  c10::optional<double> scale;
  bool causal = false;
  /// 0: none; else keys with i − window ≤ j (and j ≤ i + window when not causal).
  int64_t window = 0;
  bool alibi = false;
};

/// p [B, Hq, Sq, Sk] for q [B, Hq, Sq, D], k [B, Hkv, Sk, D] (GQA repeats k), computed in q's
/// dtype: s = scale·q·kᵀ (− ALiBi), then the normalizer over allowed keys; 0 elsewhere.
/// Differentiable. Throws for IR normalizers, which only the compiler evaluates.
at::Tensor reference_attention_probabilities(const at::Tensor &q, const at::Tensor &k,
                                             const ReferenceAttentionSpec &spec);

/// p·v with v repeated for GQA → [B, Hq, Sq, Dv].
at::Tensor reference_attention(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                               const ReferenceAttentionSpec &spec);

/// Per head, the sum over samples and queries of the entropy of p/Σp (rows with Σp = 0 count
/// 0), float64 [Hq]. Divide by B·Sq for the mean.
at::Tensor attention_entropy_sum(const at::Tensor &probabilities);

} // namespace attn::models

#endif // MODELS_REFERENCEATTENTION_H
