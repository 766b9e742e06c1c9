#include "models/ReferenceAttention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace attn::models {

at::Tensor reference_attention_probabilities(const at::Tensor &q, const at::Tensor &k,
                                             const ReferenceAttentionSpec &spec) {
  TORCH_CHECK(spec.normalizer.kind != NormalizerSpec::Kind::Ir &&
                  spec.normalizer.kind != NormalizerSpec::Kind::Named,
              "the reference attention evaluates softmax, sigmoid and relu only; use the "
              "compiled backend and turn record_entropy off");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && q.size(1) % k.size(1) == 0,
              "reference attention: q [B, Hq, Sq, D] and k [B, Hkv, Sk, D] with Hq % Hkv == 0, "
              "got ", q.sizes(), " and ", k.sizes());
  const int64_t heads = q.size(1), queries = q.size(2), keys = k.size(2);
  const double scale = spec.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(3))));
  const at::Tensor repeatedKeys = k.repeat_interleave(heads / k.size(1), 1);
  at::Tensor scores = at::matmul(q, repeatedKeys.transpose(-2, -1)) * scale;

  const at::TensorOptions indexOptions = q.options().dtype(at::kLong);
  const at::Tensor row = at::arange(queries, indexOptions).unsqueeze(1);
  const at::Tensor column = at::arange(keys, indexOptions).unsqueeze(0);
  if (spec.alibi) {
    const at::Tensor distance = (row - column).abs().to(q.scalar_type());
    const at::Tensor slopes = alibi_slopes(heads).to(q.options()).view({1, heads, 1, 1});
    scores = scores - slopes * distance;
  }
  at::Tensor allowed = at::ones({queries, keys}, q.options().dtype(at::kBool));
  if (spec.causal)
    allowed = allowed.logical_and(column <= row);
  if (spec.window > 0) {
    allowed = allowed.logical_and(column >= row - spec.window);
    if (!spec.causal)
      allowed = allowed.logical_and(column <= row + spec.window);
  }
  const at::Tensor disallowed = allowed.logical_not();

  at::Tensor probabilities;
  switch (spec.normalizer.kind) {
  case NormalizerSpec::Kind::Softmax:
    // A row with no allowed key is NaN after softmax; the masked_fill below makes it 0.
    probabilities =
        scores.masked_fill(disallowed, -std::numeric_limits<double>::infinity()).softmax(-1);
    break;
  case NormalizerSpec::Kind::Sigmoid:
    probabilities = (scores + spec.normalizer.parameter.value_or(
                                  -std::log(static_cast<double>(std::max<int64_t>(keys, 1)))))
                        .sigmoid();
    break;
  case NormalizerSpec::Kind::Relu:
    probabilities = scores.relu() * spec.normalizer.parameter.value_or(
                                        1.0 / static_cast<double>(std::max<int64_t>(keys, 1)));
    break;
  case NormalizerSpec::Kind::Named:
  case NormalizerSpec::Kind::Ir:
    break;
  }
  return probabilities.masked_fill(disallowed, 0.0);
}

at::Tensor reference_attention(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                               const ReferenceAttentionSpec &spec) {
  const at::Tensor probabilities = reference_attention_probabilities(q, k, spec);
  return at::matmul(probabilities, v.repeat_interleave(q.size(1) / v.size(1), 1));
}

at::Tensor attention_entropy_sum(const at::Tensor &probabilities) {
  const at::Tensor p = probabilities.detach().to(at::kDouble);
  const at::Tensor total = p.sum(-1, /*keepdim=*/true);
  const at::Tensor normalized = p / total.clamp_min(std::numeric_limits<double>::min());
  // 0·log 0 = 0.
  const at::Tensor terms = at::where(normalized > 0, -normalized * normalized.log(),
                                     at::zeros_like(normalized));
  return terms.sum(-1).sum(at::IntArrayRef{0, 2});
}

} // namespace attn::models
